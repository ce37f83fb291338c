"""Expand–contract, step two: each function gets one environment, `production` at
position 0, holding its Lambda settings exactly as they were (secret values copied as
stored ciphertext or text, never decrypted); every deployment points at it, and the
function's drift state becomes the environment's.

Reversible: the reverse copies each function's first environment (and its drift
state) back onto the function; environments after the first have no place there.
"""

from django.db import migrations

MOVED = ("lambda_name", "alias", "memory_mb", "timeout_s", "secret_keys", "execution_role_arn", "paused_reason")
DRIFT = ("expected_state", "drift_observed", "drift_fingerprint", "drift_detected_at", "drift_checked_at")


def forward(apps, schema_editor):
    Function = apps.get_model("portal", "Function")
    Environment = apps.get_model("portal", "Environment")
    Deployment = apps.get_model("portal", "Deployment")
    Old = apps.get_model("portal", "DriftState")
    DriftState = apps.get_model("portal", "EnvironmentDriftState")
    have = set(Environment.objects.values_list("function_id", flat=True))
    Environment.objects.bulk_create(
        [Environment(function_id=row["pk"], name="production", position=0, variables=row["environment"],
                     **{f: row[f] for f in MOVED})
         for row in Function.objects.values("pk", "environment", *MOVED).iterator() if row["pk"] not in have],
        batch_size=500)
    first = {}
    for env in Environment.objects.order_by("-position").values("pk", "function_id"):
        first[env["function_id"]] = env["pk"]
    for function_id, env_id in first.items():
        Deployment.objects.filter(function_id=function_id, environment__isnull=True).update(environment_id=env_id)
    old = {row["function_id"]: row for row in Old.objects.values("function_id", *DRIFT)}
    made = set(DriftState.objects.values_list("environment_id", flat=True))
    DriftState.objects.bulk_create(
        [DriftState(environment_id=env_id, **{f: old[function_id][f] for f in DRIFT} if function_id in old else {})
         for function_id, env_id in first.items() if env_id not in made],
        batch_size=500)
    made |= set(first.values())
    DriftState.objects.bulk_create(  # environments after the first (none yet): their own, empty
        [DriftState(environment_id=pk) for pk in Environment.objects.values_list("pk", flat=True) if pk not in made],
        batch_size=500)


def backward(apps, schema_editor):
    Function = apps.get_model("portal", "Function")
    Environment = apps.get_model("portal", "Environment")
    Old = apps.get_model("portal", "DriftState")
    DriftState = apps.get_model("portal", "EnvironmentDriftState")
    seen = set()
    for env in Environment.objects.order_by("function_id", "position").iterator():
        if env.function_id in seen:
            continue
        seen.add(env.function_id)
        Function.objects.filter(pk=env.function_id).update(environment=env.variables,
                                                           **{f: getattr(env, f) for f in MOVED})
        drift = DriftState.objects.filter(environment_id=env.pk).values(*DRIFT).first() or {}
        Old.objects.update_or_create(function_id=env.function_id, defaults=drift)


class Migration(migrations.Migration):
    dependencies = [("portal", "0016_environments")]
    operations = [migrations.RunPython(forward, backward)]
