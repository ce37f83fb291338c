"""Builds are keyed by all their inputs, not commit and architecture alone; a
Lambda belongs to at most one function; rollbacks start in their own
"checking" status."""

import hashlib

import django.core.validators
import django.db.models.deletion
from django.db import migrations, models


def legacy_inputs(apps, schema_editor):
    # Builds made before inputs were recorded: one per (function, commit, architecture), as before.
    Build = apps.get_model("portal", "Build")
    for build in Build.objects.all():
        key = f"legacy:{build.commit_sha}:{build.architecture}"
        Build.objects.filter(pk=build.pk).update(inputs_digest=hashlib.sha256(key.encode()).hexdigest())


class Migration(migrations.Migration):
    dependencies = [("portal", "0001_initial")]

    operations = [
        migrations.RemoveConstraint(model_name="build", name="one_build_per_commit_arch"),
        migrations.AddField(
            model_name="build", name="inputs_digest",
            field=models.CharField(default="", help_text="SHA-256 of every input that shapes the image.",
                                   max_length=64),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="build", name="inputs",
            field=models.JSONField(blank=True, default=dict,
                                   help_text="What made it: context, Dockerfile, build args."),
        ),
        migrations.RunPython(legacy_inputs, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="build",
            constraint=models.UniqueConstraint(fields=("function", "inputs_digest"), name="one_build_per_inputs"),
        ),
        migrations.AlterField(
            model_name='build',
            name='status',
            field=models.CharField(choices=[('pending', 'Pending'), ('building', 'Building'), ('succeeded', 'Succeeded'), ('failed', 'Failed')], default='pending', max_length=10),
        ),
        migrations.AlterField(
            model_name='deployment',
            name='status',
            field=models.CharField(choices=[('queued', 'Queued'), ('checking', 'Checking the release'), ('source', 'Fetching source'), ('building', 'Building'), ('pushing', 'Pushing'), ('updating', 'Updating Lambda'), ('waiting', 'Waiting for update'), ('publishing', 'Publishing version'), ('verifying', 'Verifying'), ('shifting', 'Moving alias'), ('succeeded', 'Succeeded'), ('failed', 'Failed'), ('cancelled', 'Cancelled'), ('superseded', 'Superseded')], db_index=True, default='queued', max_length=12),
        ),
        migrations.AlterField(
            model_name='deployment',
            name='superseded_by',
            field=models.ForeignKey(blank=True, help_text='The request that replaced this one (a running deploy stops before moving the alias).', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='portal.deployment'),
        ),
        migrations.AlterField(
            model_name='function',
            name='lambda_name',
            field=models.CharField(error_messages={'unique': 'another function already deploys to this Lambda'}, max_length=64, unique=True, validators=[django.core.validators.RegexValidator('^[A-Za-z0-9_-]+$', "letters, digits, '-' and '_' only")]),
        ),
    ]
