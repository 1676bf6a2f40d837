"""Organisations that existed before automatic dispatch start with the same preset rule as new ones."""

from django.db import migrations


def add_presets(apps, schema_editor):  # type: ignore[no-untyped-def]
    Organization = apps.get_model("directory", "Organization")
    DispatchRule = apps.get_model("safety", "DispatchRule")
    for organization in Organization.objects.all():
        if not DispatchRule.objects.filter(organization=organization).exists():
            DispatchRule.objects.create(
                organization=organization,
                name="震度5強以上 / Intensity 5+ or more",
                hazard="earthquake",
                min_intensity="5+",
                target_mode="based",
                is_preset=True,
            )


class Migration(migrations.Migration):
    dependencies = [("safety", "0005_autodispatch"), ("directory", "0002_directory_import")]

    operations = [migrations.RunPython(add_presets, migrations.RunPython.noop)]
