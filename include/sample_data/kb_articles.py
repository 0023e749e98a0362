"""Deterministic demo data: one day's export of new and changed knowledge-base articles.

The export holds the articles created that day, and articles of the day before: most exported
again unchanged (the export tool re-sends every article it touched, edited or not), some
changed (a paragraph added, ``updated_at`` moved on). Besides those, the awkward rows real
exports have: an exact duplicate, an article with an empty body, one without an id, and a
broken line. Every article of day D is the same on every call, so two consecutive days share
their unchanged rows byte for byte.
"""

from __future__ import annotations

import json
import random
from datetime import date, timedelta
from pathlib import Path

SECTIONS = {
    "billing": [
        "Invoices are issued on the first day of each billing period and sent to the account owner.",
        "You can change your payment method under Settings > Billing; the change applies to the next invoice.",
        "Refunds go back to the original payment method and usually take 5 to 10 business days.",
        "Annual plans can be paid by bank transfer; the invoice lists the IBAN and the reference to use.",
    ],
    "account": [
        "To reset your password, click 'Forgot password' on the login page; the link is valid for 30 minutes.",
        "Two-factor authentication can be turned on under Settings > Security with any authenticator app.",
        "Account owners can transfer ownership to another admin from Settings > Members.",
        "If you no longer receive e-mails from us, check that the address on your profile is current.",
    ],
    "integrations": [
        "The Slack integration posts a message to the channel you choose whenever a record changes.",
        "Webhooks are retried up to five times with exponential back-off when your endpoint fails.",
        "API tokens are scoped to one workspace; create them under Settings > API and keep them secret.",
        "The CSV import accepts UTF-8 files of up to 50,000 rows; larger files are split automatically.",
    ],
    "troubleshooting": [
        "A 'sync error 409' means two devices changed the same record; open it and keep the version you want.",
        "If the app is slow, clear the cache under Settings > Advanced and reload the page.",
        "Exports larger than 10,000 rows run in the background and are sent to you by e-mail.",
        "When an upload fails, check that the file is not open in another program and try again.",
    ],
}
TITLES = {
    "billing": [
        "Understanding your invoice",
        "Changing your payment method",
        "Requesting a refund",
        "Paying by bank transfer",
    ],
    "account": [
        "Resetting your password",
        "Turning on two-factor authentication",
        "Transferring ownership",
        "Updating your e-mail",
    ],
    "integrations": ["Connecting Slack", "Webhook retries", "Creating API tokens", "Importing a CSV file"],
    "troubleshooting": ["Fixing sync error 409", "When the app is slow", "Large exports", "Failed uploads"],
}
FOREIGN = [
    (
        "de",
        "Passwort zurücksetzen",
        "Klicken Sie auf der Anmeldeseite auf 'Passwort vergessen'. Der Link ist 30 Minuten gültig.",
    ),
    (
        "fr",
        "Demander un remboursement",
        "Le remboursement est recrédité sur le moyen de paiement d'origine sous 5 à 10 jours.",
    ),
    ("es", "Exportar sus datos", "Las exportaciones de más de 10.000 filas se envían por correo electrónico."),
]
EPOCH = date(2026, 1, 1)


def _ordinal(day: str) -> int:
    return (date.fromisoformat(day) - EPOCH).days


def article_id(day: str, n: int) -> str:
    """The id of the ``n``-th article created on ``day`` (``KB-`` day number, then ``n``)."""
    return f"KB-{_ordinal(day):03d}{n:03d}"


def article(day: str, n: int, seed: int = 11, *, changed_on: str | None = None) -> dict:
    """The ``n``-th article created on ``day``, as first written, or as edited on ``changed_on``."""
    rng = random.Random(f"{seed}:{day}:{n}")
    if rng.random() < 0.1:
        language, title, body = rng.choice(FOREIGN)
        section = "account"
    else:
        language, section = "en", rng.choice(sorted(SECTIONS))
        title = rng.choice(TITLES[section])
        body = "\n\n".join(rng.sample(SECTIONS[section], k=rng.randint(1, 3)))
    row = {
        "article_id": article_id(day, n),
        "title": f"{title} ({n})",
        "body": body,
        "section": section,
        "language": language,
        "url": f"https://help.example.com/articles/{article_id(day, n).lower()}",
        "updated_at": f"{day}T{8 + n % 10:02d}:{n % 60:02d}:00Z",
    }
    if changed_on:
        row["body"] += f"\n\nUpdated on {changed_on}: the steps now match the new settings page."
        row["updated_at"] = f"{changed_on}T09:00:00Z"
    return row


def generate(day: str, count: int = 120, seed: int = 11) -> list[str]:
    """JSONL lines of ``day``'s export; ``count`` lines, bad ones included."""
    if count < 30:
        raise ValueError("count must be at least 30 to fit the awkward rows")
    before = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
    again, edited = count // 12, count // 24  # of the day before's articles: unchanged, changed
    new = count - again - edited - 4  # a duplicate, an empty body, no id, a broken line
    rng = random.Random(f"{seed}:{day}:export")
    picked = rng.sample(range(new), again + edited)  # the day before had (about) as many new ones
    rows = [article(day, n, seed) for n in range(new)]
    rows += [article(before, n, seed) for n in picked[:again]]
    rows += [article(before, n, seed, changed_on=day) for n in picked[again:]]
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    empty = dict(rows[1], article_id=article_id(day, 900), body="")
    no_id = {k: v for k, v in rows[2].items() if k != "article_id"}
    awkward = [
        lines[3],  # exported twice in one file
        json.dumps(empty, ensure_ascii=False),
        json.dumps(no_id, ensure_ascii=False),
        '{"article_id": "KB-999999", "title": "Cut off mid-export", "body": "Refunds go back to the',
    ]
    for line in awkward:
        lines.insert(rng.randrange(5, len(lines)), line)
    return lines


def write_day(data_dir: Path, day: str, count: int = 120, seed: int = 11) -> Path:
    path = Path(data_dir) / "kb" / f"articles_{day}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(generate(day, count, seed)) + "\n", encoding="utf-8")
    return path
