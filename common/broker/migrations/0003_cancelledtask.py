import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("broker", "0002_indexes_and_notify")]

    operations = [
        migrations.CreateModel(
            name="CancelledTask",
            fields=[
                ("task_id", models.CharField(max_length=255, primary_key=True, serialize=False)),
                ("cancelled_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("skipped_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={"db_table": "broker_cancelled_task"},
        ),
    ]
