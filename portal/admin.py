"""Admin for uploads (read-only: writes go through services) and API tokens (created and revoked via services)."""

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model

from portal.models import ApiToken, UploadFile
from portal.services.removal import delete_upload
from portal.services.tokens import create_api_token, revoke_api_token


class ApiTokenCreationForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ["user", "name"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["prefix", "user", "name", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["prefix", "name", "user__username"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiTokenCreationForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request, obj=None):
        return ["user", "name"] if obj is None else ["user", "name", *self.readonly_fields]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else ["user", *self.readonly_fields]

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=["name"])
            return
        issued = create_api_token(user=form.cleaned_data["user"], name=form.cleaned_data["name"])
        obj.pk = issued.token.pk
        # The only time the plaintext exists outside the client: show it once, never store it.
        self.message_user(
            request,
            f"Token created. Copy it now, it will not be shown again: {issued.plaintext}",
            messages.WARNING,
        )

    def has_delete_permission(self, request, obj=None):
        return False  # revoke instead: a revoked token stays listed for audit

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset):
        for token in queryset:
            revoke_api_token(token=token)
        self.message_user(request, f"Revoked {queryset.count()} token(s).", messages.SUCCESS)


@admin.register(UploadFile)
class UploadFileAdmin(admin.ModelAdmin):
    list_display = ["original_filename", "owner", "status", "size_bytes", "content_type", "created_at", "expires_at"]
    list_filter = ["status"]
    search_fields = ["id", "original_filename", "sha256", "owner__" + get_user_model().USERNAME_FIELD]
    actions = ["delete_files"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in UploadFile._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # the action below removes bytes and emits file.deleted

    @admin.action(description="Delete selected files (removes bytes, emits file.deleted)")
    def delete_files(self, request, queryset):
        count = 0
        for upload in queryset:
            delete_upload(upload=upload)
            count += 1
        self.message_user(request, f"Deleted {count} file(s).", messages.SUCCESS)
