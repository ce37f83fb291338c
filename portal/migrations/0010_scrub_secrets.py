"""Scrub what is already stored of every current secret value (issue 25, defect 3).

Before this, Lambda's answer to an oversized environment ("... exceeded the 4KB limit.
String measured: {"KEY":"value",...}") was stored verbatim in step outputs and error
messages, and an error message could reach a notification attempt's detail. Every row
of a function with secret variables that holds one of their values (raw, JSON-escaped
or repr-escaped), and every row holding "String measured:", is passed through
deploy.logs.mask, which cuts the measured text and masks the values. Nothing to undo.
"""

from django.db import migrations
from django.db.models import Q

from deploy.logs import mask, secret_forms

TEXTS = (("DeploymentStep", "deployment__function", "output"), ("Deployment", "function", "error_message"),
         ("NotificationAttempt", "function", "detail"))


def _secrets(function) -> list[str]:
    # The function's own variables, as this migration's Function has them; since 0018 they
    # are on its environments (tests/test_secrets.py runs this with today's models too).
    if hasattr(function, "environments"):
        pairs = [(env.variables, env.secret_keys) for env in function.environments.all()]
    else:
        pairs = [(function.environment, function.secret_keys)]
    values = []
    for env, keys in pairs:
        env = env if isinstance(env, dict) else {}
        values += [str(env[key]) for key in (keys or []) if key in env and env[key]]
    return values


def scrub(apps, schema_editor):
    Function = apps.get_model("portal", "Function")
    secrets_by_function = {function.pk: _secrets(function) for function in Function.objects.all()}
    for model_name, to_function, field in TEXTS:
        model = apps.get_model("portal", model_name)
        for function_id, secrets in secrets_by_function.items():
            forms = [form for secret in secrets for form in secret_forms(secret)]
            holding = Q(**{f"{field}__contains": "String measured:"})
            for form in forms:
                holding |= Q(**{f"{field}__contains": form})
            rows = model.objects.filter(holding, **{f"{to_function}_id": function_id}).only("pk", field)
            for row in rows.iterator():
                text = getattr(row, field)
                cleaned = mask(text, *secrets)
                if cleaned != text:
                    model.objects.filter(pk=row.pk).update(**{field: cleaned[:500] if field == "detail" else cleaned})


class Migration(migrations.Migration):
    dependencies = [("portal", "0009_reconcile_last_check")]

    operations = [migrations.RunPython(scrub, migrations.RunPython.noop)]
