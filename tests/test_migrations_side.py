"""The move of a function's hook keys, repository access, feedback settings and drift
state to their side rows (migrations 0013 to 0015), on a database as main left it:
every secret still opens, every member is still notified, every function has its
side rows, and the way back puts it all on the function again."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from portal.core import crypto

BEFORE = ("portal", "0012_merge_build_repository")
AFTER = ("portal", "0015_function_one_concern")  # the move's last step (0017 then moves the drift state on)
SIDES = {
    "HookKeys": ("webhook_secret_hash", "webhook_signing_key"),
    "SourceAccess": ("source_auth", "source_username", "source_secret", "source_known_hosts",
                     "reconcile_checked_at", "reconcile_outcome", "reconcile_message"),
    "FeedbackSettings": ("gitlab_api_url", "gitlab_project", "gitlab_status_token", "notify_webhook_url",
                         "notify_webhook_secret"),
    "DriftState": ("expected_state", "drift_observed", "drift_fingerprint", "drift_detected_at", "drift_checked_at"),
}
SEALED = ("webhook_signing_key", "source_secret", "gitlab_status_token", "notify_webhook_secret")
DEPLOY_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\n"
              "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"
              "QyNTUxOQAAACB0ZXN0LWtleS1mb3ItdGhlLW1pZ3JhdGlvbi10ZXN0\n-----END OPENSSH PRIVATE KEY-----\n")


def _secrets(n: int) -> dict[str, str]:
    return {"webhook_signing_key": f"whsec_{n}-signing-key-of-function-{n}",
            "source_secret": DEPLOY_KEY if n == 1 else f"gldt-deploy-token-{n}-abcdefghijkl",
            "gitlab_status_token": f"glpat-status-token-{n}-abcdefgh",
            "notify_webhook_secret": f"slwsec_notify-secret-{n}"}


def _values(n: int, secrets: dict[str, str]) -> dict:
    """Every moved field of function `n`, with real Fernet ciphertext for the sealed ones."""
    expected = {"alias_version": str(n), "image_digest": "sha256:" + str(n) * 64, "memory_mb": 256 * n,
                "timeout_s": 30, "architecture": "arm64", "environment": {"MODE": "fast", "API_KEY": f"key-{n}"}}
    return {
        "webhook_secret_hash": f"{n:x}" * 64,
        "source_auth": "ssh-key" if n == 1 else "token",
        "source_username": "" if n == 1 else f"gitlab+deploy-token-{n}",
        "source_known_hosts": "gitlab.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHRlc3Q=\n" if n == 1 else "",
        "reconcile_checked_at": datetime(2026, 11, n, 12, 30, 15, 123456, tzinfo=UTC),
        "reconcile_outcome": "up-to-date" if n == 1 else "error",
        "reconcile_message": f"checked {n}",
        "gitlab_api_url": "https://gitlab.example.org", "gitlab_project": f"team/fn-{n}",
        "notify_webhook_url": f"https://hooks.example.org/fn-{n}",
        "expected_state": expected,
        "drift_observed": {**expected, "memory_mb": 1024, "environment": {"MODE": "slow", "API_KEY": "changed"}},
        "drift_fingerprint": f"{n}" * 64,
        "drift_detected_at": datetime(2026, 11, n, 13, 0, 0, 654321, tzinfo=UTC),
        "drift_checked_at": datetime(2026, 11, n, 14, 0, 0, tzinfo=UTC),
        **{field: crypto.encrypt(value) for field, value in secrets.items()},
    }


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_move_to_side_rows_keeps_every_secret_and_member_and_the_way_back_restores_them(migrations):
    from django.contrib.auth import get_user_model

    users = {name: get_user_model().objects.create_user(name, f"{name}@example.org") for name in ("ann", "ben", "cy")}
    old = migrations(BEFORE)
    Fn = old.get_model("portal", "Function")
    secrets = {n: _secrets(n) for n in (1, 2)}
    stored = {n: _values(n, secrets[n]) for n in (1, 2)}
    made = {n: Fn.objects.create(name=f"fn-{n}", repository_url=f"https://gitlab.example.com/team/fn-{n}.git",
                                 ecr_repository=f"slipway/fn-{n}", lambda_name=f"slipway-fn-{n}", **stored[n])
            for n in (1, 2)}
    bare = Fn.objects.create(name="bare", repository_url="https://gitlab.example.com/team/bare.git",
                             ecr_repository="slipway/bare", lambda_name="slipway-bare")
    members = {1: ["ann", "ben"], 2: ["cy"]}
    for n, names in members.items():
        made[n].notify_members.set([users[name].pk for name in names])

    new = migrations(AFTER)
    for model, fields in SIDES.items():
        rows = new.get_model("portal", model).objects.all()
        assert sorted(rows.values_list("function_id", flat=True)) == sorted([made[1].pk, made[2].pk, bare.pk]), model
        for n, function in made.items():
            row = rows.get(function_id=function.pk)
            assert {f: getattr(row, f) for f in fields} == {f: stored[n][f] for f in fields}, (model, n)
            for field in set(SEALED) & set(fields):
                # The ciphertext as it was (never decrypted and sealed again), and it still opens.
                assert getattr(row, field) == stored[n][field]
                assert crypto.decrypt(getattr(row, field)) == secrets[n][field], (field, n)
        row = rows.get(function_id=bare.pk)
        assert {f: getattr(row, f) for f in fields} == {
            f: getattr(Fn(), f) for f in fields}, (model, "bare")  # the defaults, as the bare function had them
    Settings = new.get_model("portal", "FeedbackSettings")
    for n, names in members.items():
        notified = Settings.objects.get(function_id=made[n].pk).notify_members.values_list("username", flat=True)
        assert sorted(notified) == names
    assert not Settings.objects.get(function_id=bare.pk).notify_members.exists()
    fields = {f.name for f in new.get_model("portal", "Function")._meta.get_fields()}
    assert not fields & {f for moved in SIDES.values() for f in moved} and "notify_members" not in fields

    back = migrations(BEFORE)
    Fn = back.get_model("portal", "Function")
    for n, function in made.items():
        again = Fn.objects.get(pk=function.pk)
        assert {f: getattr(again, f) for f in stored[n]} == stored[n], n
        assert {f: crypto.decrypt(getattr(again, f)) for f in SEALED} == secrets[n]
        assert sorted(again.notify_members.values_list("username", flat=True)) == members[n]
    again = Fn.objects.get(pk=bare.pk)
    assert {f: getattr(again, f) for f in stored[1]} == {f: getattr(Fn(), f) for f in stored[1]}
