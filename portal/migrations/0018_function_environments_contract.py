"""Expand–contract, step three: the function's own Lambda settings and drift state
are gone (its environments hold them, 0017), every deployment names its
environment, and the environments' drift state takes the name DriftState."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('portal', '0017_copy_to_environments'),
    ]

    operations = [
        *[migrations.RemoveField(model_name='function', name=name)
          for name in ('lambda_name', 'alias', 'memory_mb', 'timeout_s', 'environment', 'secret_keys',
                       'execution_role_arn', 'paused_reason')],
        migrations.AlterField(
            model_name='deployment',
            name='environment',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='deployments', to='portal.environment'),
        ),
        migrations.AddIndex(
            model_name='deployment',
            index=models.Index(fields=['environment', 'status'], name='portal_depl_environ_28addd_idx'),
        ),
        migrations.DeleteModel(name='DriftState'),  # the function's, copied in 0017
        migrations.RenameModel(old_name='EnvironmentDriftState', new_name='DriftState'),
    ]
