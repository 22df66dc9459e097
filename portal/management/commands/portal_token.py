"""Create, list and revoke API tokens from the command line."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.models import ApiToken
from portal.services.tokens import create_api_token, revoke_api_token


class Command(BaseCommand):
    help = "Manage portal API tokens: create (prints the token once), list, revoke."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Create a token for a user and print it once.")
        create.add_argument("username")
        create.add_argument("--name", default="")
        listing = sub.add_parser("list", help="List tokens (prefixes only).")
        listing.add_argument("--user", default=None)
        revoke = sub.add_parser("revoke", help="Revoke a token by its id or prefix.")
        revoke.add_argument("token", help="token id or prefix (e.g. dt_AbC123)")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        if action == "create":
            user_model = get_user_model()
            try:
                user = user_model.objects.get_by_natural_key(options["username"])
            except user_model.DoesNotExist:
                raise CommandError(f"No user {options['username']!r}.") from None
            issued = create_api_token(user=user, name=options["name"])
            self.stderr.write("Token created; it will not be shown again:")
            self.stdout.write(issued.plaintext)
        elif action == "list":
            tokens = ApiToken.objects.select_related("user").order_by("id")
            if options["user"]:
                tokens = tokens.filter(user__username=options["user"])
            for token in tokens:
                state = f"revoked {token.revoked_at:%Y-%m-%d %H:%M}" if token.revoked_at else "active"
                self.stdout.write(f"{token.id}\t{token.prefix}\t{token.user}\t{token.name}\t{state}")
        else:
            ref = options["token"]
            matches = list(
                ApiToken.objects.filter(pk=int(ref)) if ref.isdigit() else ApiToken.objects.filter(prefix=ref)
            )
            if len(matches) != 1:
                raise CommandError(f"{ref!r} matches {len(matches)} tokens; give the token id.")
            revoke_api_token(token=matches[0])
            self.stdout.write(f"Revoked {matches[0].prefix} ({matches[0].user}).")
