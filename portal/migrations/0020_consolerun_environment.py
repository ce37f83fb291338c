import django.db.models.deletion
from django.db import migrations, models


def first_environment(apps, schema_editor):
    """Every run so far invoked the function's one Lambda: its first environment's."""
    ConsoleRun = apps.get_model("portal", "ConsoleRun")
    Environment = apps.get_model("portal", "Environment")
    first = {}
    for environment in Environment.objects.order_by("function_id", "-position"):
        first[environment.function_id] = environment.pk  # the lowest position is written last
    for function_id, environment_id in first.items():
        ConsoleRun.objects.filter(function_id=function_id, environment__isnull=True).update(
            environment_id=environment_id)


class Migration(migrations.Migration):

    dependencies = [
        ('portal', '0019_promotion'),
    ]

    operations = [
        migrations.AddField(
            model_name='consolerun',
            name='environment',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='console_runs', to='portal.environment'),
        ),
        migrations.RunPython(first_environment, migrations.RunPython.noop),
    ]
