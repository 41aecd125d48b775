"""A folder of template files: the layout ``outbox templates push`` reads.

::

    DIR/<key>/<channel>[.<locale>]/
        subject.txt   email subject                                    (email: required)
        body.txt      text body: email text part, SMS text, push body  (required)
        body.html     email HTML body, autoescaped                     (email: optional)
        title.txt     push title                                       (push: optional)

``<channel>`` alone is the ``default`` locale; ``sms.fr`` or ``email.fr-CA`` name
another. Files are UTF-8; the one trailing newline an editor adds is dropped.
Dotfiles and ``*.md`` files at the top are ignored. docs/templates.md has the
details. Loading checks the layout (and that each template compiles, with
:func:`compile_problems`) without touching the database, so that every problem
is reported at once, with its path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from outbox.errors import ValidationError
from outbox.templates import (
    CHANNELS,
    FIELDS,
    TemplateError,
    TemplateVersion,
    compile_template,
    content_hash,
)

__all__ = ["CHANNEL_FILES", "FILES", "TemplateSource", "compile_problems", "load_folder"]

# File name -> template field, and which files each channel has.
FILES = {
    "subject.txt": "subject",
    "body.txt": "body",
    "body.html": "html_body",
    "title.txt": "title",
}
CHANNEL_FILES = {
    "email": ("subject.txt", "body.txt", "body.html"),
    "sms": ("body.txt",),
    "push": ("title.txt", "body.txt"),
}
# The database's own rules (sql/schema.sql), checked here first so that every problem
# of a folder is reported at once, with the path it comes from.
_KEY = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")
_LOCALE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


@dataclass(frozen=True)
class TemplateSource:
    """One (key, channel, locale) read from a templates folder."""

    key: str
    channel: str
    locale: str
    subject: str | None
    body: str
    html_body: str | None
    title: str | None
    path: Path

    @property
    def content_hash(self) -> str:
        return content_hash(self.subject, self.body, self.html_body, self.title)

    def as_version(self) -> TemplateVersion:
        # Not stored yet, so no id or version number: -1 and 0 stand in for them (the
        # compile cache is keyed by id, and compares the sources, so -1 never serves stale code).
        return TemplateVersion(
            id=-1,
            key=self.key,
            channel=self.channel,
            locale=self.locale,
            version=0,
            subject=self.subject,
            body=self.body,
            html_body=self.html_body,
            title=self.title,
            content_hash=self.content_hash,
        )


def _read_text(path: Path, problems: list[str]) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problems.append(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})")
        return None
    # Editors end files with a newline; it is not part of the template.
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


def load_folder(root: Path) -> list[TemplateSource]:
    """Every template in ``root``; ValidationError listing every problem found (one per line)."""
    if not root.is_dir():
        raise ValidationError(f"{root} is not a directory", field="DIR")
    problems: list[str] = []
    found: list[TemplateSource] = []
    for key_dir in sorted(root.iterdir()):
        if key_dir.name.startswith(".") or (key_dir.is_file() and key_dir.suffix == ".md"):
            continue  # .git, editor files, a README
        if not key_dir.is_dir():
            problems.append(f"{key_dir}: expected a folder per template key, found a file")
            continue
        if not _KEY.match(key_dir.name):
            problems.append(
                f"{key_dir}: {key_dir.name!r} is not a valid template key "
                "(lowercase letters, digits, _ . -; starting with a letter or digit)"
            )
            continue
        for variant in sorted(key_dir.iterdir()):
            if variant.name.startswith("."):
                continue
            source = _load_variant(key_dir.name, variant, problems)
            if source is not None:
                found.append(source)
    seen: dict[tuple[str, str, str], Path] = {}
    for source in found:
        ident = (source.key, source.channel, source.locale)
        if ident in seen:
            problems.append(
                f"{source.path}: same template as {seen[ident]} ({source.channel}, {source.locale})"
            )
        seen[ident] = source.path
    if not found and not problems:
        problems.append(
            f"{root}: no templates found (expected {root}/<key>/<channel>[.<locale>]/body.txt)"
        )
    if problems:
        raise ValidationError("\n".join(problems), field="DIR")
    return found


def _load_variant(key: str, folder: Path, problems: list[str]) -> TemplateSource | None:
    channel, _, locale = folder.name.partition(".")
    locale = locale or "default"
    if not folder.is_dir():
        problems.append(
            f"{folder}: expected a folder named <channel> or <channel>.<locale>, found a file"
        )
        return None
    if channel not in CHANNELS:
        problems.append(f"{folder}: unknown channel {channel!r} (expected {', '.join(CHANNELS)})")
        return None
    if locale != "default" and not _LOCALE.match(locale):
        problems.append(f"{folder}: {locale!r} is not a locale like fr or fr-CA")
        return None
    allowed = CHANNEL_FILES[channel]
    fields: dict[str, str | None] = dict.fromkeys(FIELDS)
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.name not in allowed or not path.is_file():
            problems.append(
                f"{path}: unexpected {'folder' if path.is_dir() else 'file'} "
                f"(a {channel} template has {', '.join(allowed)})"
            )
            continue
        fields[FILES[path.name]] = _read_text(path, problems)
    if not fields["body"]:
        problems.append(f"{folder}: body.txt is missing or empty")
        return None
    if channel == "email" and not (fields["subject"] or "").strip():
        problems.append(f"{folder}: an email template needs a non-empty subject.txt")
        return None
    return TemplateSource(
        key=key,
        channel=channel,
        locale=locale,
        subject=fields["subject"],
        body=fields["body"],
        html_body=fields["html_body"],
        title=fields["title"],
        path=folder,
    )


def compile_problems(sources: list[TemplateSource]) -> list[str]:
    """One line per template that does not compile (path, reason, field, line); [] if all do."""
    problems = []
    for source in sources:
        try:
            compile_template(source.as_version())
        except TemplateError as exc:
            where = f" in {exc.field}" + (f" line {exc.line}" if exc.line else "")
            problems.append(f"{source.path}: {exc.reason}{where}")
    return problems
