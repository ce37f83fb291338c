"""Expand–contract, step two: copy each function's hook keys, repository access,
feedback settings (with the members to notify) and drift state into its side rows.

Encrypted values are copied as ciphertext, never decrypted: this runs without the
Fernet key, and a value no key opens stays exactly as it was. Reversible: the
reverse copies the side rows back onto the function's own columns (which the next
migration drops, and its reverse adds back empty).
"""

from django.db import migrations

HOOKS = ("webhook_secret_hash", "webhook_signing_key")
SOURCES = ("source_auth", "source_username", "source_secret", "source_known_hosts", "reconcile_checked_at",
           "reconcile_outcome", "reconcile_message")
FEEDBACK = ("gitlab_api_url", "gitlab_project", "gitlab_status_token", "notify_webhook_url", "notify_webhook_secret")
DRIFT = ("expected_state", "drift_observed", "drift_fingerprint", "drift_detected_at", "drift_checked_at")
SIDES = (("HookKeys", HOOKS), ("SourceAccess", SOURCES), ("FeedbackSettings", FEEDBACK), ("DriftState", DRIFT))


def forward(apps, schema_editor):
    Function = apps.get_model("portal", "Function")
    for model_name, fields in SIDES:
        Side = apps.get_model("portal", model_name)
        have = set(Side.objects.values_list("function_id", flat=True))
        Side.objects.bulk_create(
            [Side(function_id=row["pk"], **{f: row[f] for f in fields})
             for row in Function.objects.values("pk", *fields).iterator() if row["pk"] not in have],
            batch_size=500)
    Settings = apps.get_model("portal", "FeedbackSettings")
    Through = Settings.notify_members.through
    members = Function.notify_members.through.objects.values_list("function_id", "user_id")
    Through.objects.bulk_create([Through(feedbacksettings_id=fid, user_id=uid) for fid, uid in members],
                                batch_size=500, ignore_conflicts=True)


def backward(apps, schema_editor):
    Function = apps.get_model("portal", "Function")
    for model_name, fields in SIDES:
        Side = apps.get_model("portal", model_name)
        for side in Side.objects.all().iterator():
            Function.objects.filter(pk=side.function_id).update(**{f: getattr(side, f) for f in fields})
    Settings = apps.get_model("portal", "FeedbackSettings")
    Through = Function.notify_members.through
    members = Settings.notify_members.through.objects.values_list("feedbacksettings_id", "user_id")
    Through.objects.bulk_create([Through(function_id=fid, user_id=uid) for fid, uid in members],
                                batch_size=500, ignore_conflicts=True)


class Migration(migrations.Migration):
    dependencies = [("portal", "0013_side_models")]
    operations = [migrations.RunPython(forward, backward)]
