"""Expand–contract, step one: environments. A function's Lambda settings (and the
drift state, which is per Lambda) move to its environments; this step adds them
beside what they replace.

Function.lambda_name loses its uniqueness here (Environment.lambda_name, unique,
takes it over in the next step), so that the way back can put the names on the
function again before making them unique once more (this migration reversed last).
The per-environment drift state is made here as EnvironmentDriftState, filled from
the function's DriftState in 0017; 0018 drops the function's and renames this one
DriftState (in that order: on Postgres a renamed table keeps its constraint names,
so a new table may not take the old one's name while it exists).
"""

import django.core.validators
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('portal', '0015_function_one_concern'),
    ]

    operations = [
        migrations.AlterField(
            model_name='function',
            name='lambda_name',
            field=models.CharField(blank=True, default='', max_length=64),
        ),
        migrations.CreateModel(
            name='Environment',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.SlugField(default='production', max_length=32)),
                ('position', models.PositiveSmallIntegerField(default=0, help_text='Promotion order: 0 is where pushes deploy.')),
                ('lambda_name', models.CharField(error_messages={'unique': 'another environment already deploys to this Lambda'}, max_length=64, unique=True, validators=[django.core.validators.RegexValidator('^[A-Za-z0-9_-]+$', "letters, digits, '-' and '_' only")])),
                ('alias', models.CharField(default='live', max_length=128, validators=[django.core.validators.RegexValidator('^(?!^[0-9]+$)[A-Za-z0-9_-]+$', 'not a valid alias')])),
                ('memory_mb', models.PositiveIntegerField(default=1024, validators=[django.core.validators.MinValueValidator(128), django.core.validators.MaxValueValidator(10240)])),
                ('timeout_s', models.PositiveIntegerField(default=30, validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(900)])),
                ('variables', models.JSONField(blank=True, default=dict, help_text='Lambda environment variables.')),
                ('secret_keys', models.JSONField(blank=True, default=list, help_text='Environment variables whose values are write-only and masked.')),
                ('execution_role_arn', models.CharField(blank=True, help_text='Used by CreateFunction on the first deploy.', max_length=2048)),
                ('paused_reason', models.CharField(blank=True, help_text='Set when auto-deploy is paused, e.g. after a rollback.', max_length=300)),
                ('promotion', models.CharField(choices=[('manual', 'Manual'), ('automatic', 'Automatic, once the previous environment succeeded')], default='manual', max_length=10)),
                ('soak_seconds', models.PositiveIntegerField(default=0, help_text='Automatic promotion waits this long first.')),
                ('function', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='environments', to='portal.function')),
            ],
            options={
                'ordering': ['position'],
                'constraints': [models.UniqueConstraint(fields=('function', 'name'), name='one_environment_per_name'), models.UniqueConstraint(fields=('function', 'position'), name='one_environment_per_position')],
            },
        ),
        migrations.AddField(
            model_name='deployment',
            name='environment',
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.CASCADE, related_name='deployments', to='portal.environment'),
        ),
        migrations.CreateModel(
            name='EnvironmentDriftState',
            fields=[
                ('environment', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='drift_state', serialize=False, to='portal.environment')),
                ('expected_state', models.JSONField(blank=True, default=dict, editable=False)),
                ('drift_observed', models.JSONField(blank=True, default=dict, editable=False)),
                ('drift_fingerprint', models.CharField(blank=True, editable=False, max_length=64)),
                ('drift_detected_at', models.DateTimeField(blank=True, editable=False, null=True)),
                ('drift_checked_at', models.DateTimeField(blank=True, editable=False, null=True)),
            ],
        ),
    ]
