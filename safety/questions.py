"""The question form of an incident: the default questions, checking a form an administrator built, and
checking one person's answers against it. Pure functions over plain dicts; no ORM here.

A question is `{"key", "kind": "single" | "multiple" | "text", "label", "label_en", "required", "choices":
[{"key", "label", "label_en"}]}`. The keys `safety` (safe / minor / serious) and `help` (yes / no) are what the
tally counts; an incident may drop them, and a form with no questions has no tally."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from django.utils.translation import get_language
from django.utils.translation import gettext as _

from config.errors import ApplicationError

QuestionKind = Literal["single", "multiple", "text"]
KINDS: tuple[QuestionKind, ...] = ("single", "multiple", "text")
MAX_QUESTIONS = 20
MAX_CHOICES = 20
MAX_TEXT = 1000
KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

SAFETY_KEY = "safety"
HELP_KEY = "help"
SAFETY_CHOICES = ("safe", "minor", "serious")


class Choice(TypedDict):
    key: str
    label: str
    label_en: str


class Question(TypedDict):
    key: str
    kind: QuestionKind
    label: str
    label_en: str
    required: bool
    choices: list[Choice]


def _choice(key: str, label: str, label_en: str) -> Choice:
    return {"key": key, "label": label, "label_en": label_en}


def default_questions() -> list[Question]:
    """The form every incident starts with (the one existing services ask)."""
    return [
        {
            "key": SAFETY_KEY,
            "kind": "single",
            "label": "あなたの安否",
            "label_en": "Are you safe?",
            "required": True,
            "choices": [
                _choice("safe", "無事", "Safe"),
                _choice("minor", "軽傷", "Minor injury"),
                _choice("serious", "重傷", "Serious injury"),
            ],
        },
        {
            "key": HELP_KEY,
            "kind": "single",
            "label": "救助・支援が必要ですか",
            "label_en": "Do you need help?",
            "required": False,
            "choices": [_choice("yes", "はい", "Yes"), _choice("no", "いいえ", "No")],
        },
        {
            "key": "work",
            "kind": "single",
            "label": "出社できますか",
            "label_en": "Can you come to work?",
            "required": False,
            "choices": [_choice("can", "可", "Yes"), _choice("cannot", "不可", "No")],
        },
        {
            "key": "home",
            "kind": "single",
            "label": "自宅の状況",
            "label_en": "Your home",
            "required": False,
            "choices": [
                _choice("none", "被害なし", "No damage"),
                _choice("partial", "一部損壊", "Partly damaged"),
                _choice("total", "全壊", "Destroyed"),
            ],
        },
        {
            "key": "comment",
            "kind": "text",
            "label": "コメント",
            "label_en": "Comment",
            "required": False,
            "choices": [],
        },
    ]


def label(item: Mapping[str, Any], language: str) -> str:
    """A question's or choice's text in `language` (English where given, else the Japanese)."""
    if language == "en" and item.get("label_en"):
        return str(item["label_en"])
    return str(item.get("label") or item.get("key", ""))


# NUL and lone surrogates cannot be stored in PostgreSQL text or jsonb: dropped, not a server error.
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def _text(value: Any, limit: int) -> str:
    return _UNSTORABLE.sub("", value).strip()[:limit] if isinstance(value, str) else ""


def questions_clean(raw: Any) -> list[Question]:
    """Check a question form built by an administrator; ApplicationError (code `bad_questions`) says what is wrong.
    The safety and help questions keep their fixed choices, whatever was sent for them."""
    if not isinstance(raw, list):
        raise ApplicationError(_("The questions must be a list."), code="bad_questions")
    if len(raw) > MAX_QUESTIONS:
        raise ApplicationError(
            _("An incident can have at most %(n)d questions.") % {"n": MAX_QUESTIONS}, code="bad_questions"
        )
    defaults = {q["key"]: q for q in default_questions()}
    cleaned: list[Question] = []
    seen: set[str] = set()
    for number, item in enumerate(raw, start=1):
        if not isinstance(item, dict):
            raise ApplicationError(_("Question %(n)d is not valid.") % {"n": number}, code="bad_questions")
        key = item.get("key") or f"q{number}"
        if not isinstance(key, str) or not KEY_RE.match(key) or key in seen:
            raise ApplicationError(
                _("Question %(n)d needs a unique key of lower-case letters and digits.") % {"n": number},
                code="bad_questions",
            )
        seen.add(key)
        if key in (SAFETY_KEY, HELP_KEY):
            fixed = dict(defaults[key])
            fixed["required"] = bool(item.get("required", fixed["required"]))
            cleaned.append(fixed)  # type: ignore[arg-type]
            continue
        kind = item.get("kind")
        if kind not in KINDS:
            raise ApplicationError(
                _("Question %(n)d must be single choice, multiple choice or text.") % {"n": number},
                code="bad_questions",
            )
        text = _text(item.get("label"), 200)
        if not text:
            raise ApplicationError(_("Question %(n)d has no text.") % {"n": number}, code="bad_questions")
        choices: list[Choice] = []
        if kind != "text":
            raw_choices = item.get("choices")
            if not isinstance(raw_choices, list) or not 2 <= len(raw_choices) <= MAX_CHOICES:
                raise ApplicationError(
                    _("Question %(n)d needs between 2 and %(max)d choices.") % {"n": number, "max": MAX_CHOICES},
                    code="bad_questions",
                )
            for index, choice in enumerate(raw_choices, start=1):
                choice_label = _text(choice.get("label") if isinstance(choice, dict) else choice, 100)
                if not choice_label:
                    raise ApplicationError(
                        _("Choice %(c)d of question %(n)d is empty.") % {"c": index, "n": number},
                        code="bad_questions",
                    )
                choice_key = choice.get("key") if isinstance(choice, dict) else None
                if not isinstance(choice_key, str) or not KEY_RE.match(choice_key):
                    choice_key = f"c{index}"
                label_en = _text(choice.get("label_en"), 100) if isinstance(choice, dict) else ""
                choices.append(_choice(choice_key, choice_label, label_en))
            if len({c["key"] for c in choices}) != len(choices):
                raise ApplicationError(
                    _("The choices of question %(n)d must be different.") % {"n": number}, code="bad_questions"
                )
        cleaned.append(
            {
                "key": key,
                "kind": kind,
                "label": text,
                "label_en": _text(item.get("label_en"), 200),
                "required": bool(item.get("required", False)),
                "choices": choices,
            }
        )
    return cleaned


@dataclass(frozen=True)
class CleanAnswer:
    values: dict[str, Any]
    status: str  # AnswerStatus value
    needs_help: bool


def answer_clean(questions: Sequence[Mapping[str, Any]], raw: Any, *, partial: bool = False) -> CleanAnswer:
    """Check one person's answers against the form. Unknown keys are dropped; a missing required answer, or a
    choice the question does not have, is an ApplicationError (code `bad_answer`) and nothing is saved.

    `partial` (a quick answer from a notification button): only the questions `raw` names are checked, so a form
    with other required questions can still be answered with one tap; a choice it does not have is still refused."""
    if not isinstance(raw, dict):
        raise ApplicationError(_("The answers must be an object."), code="bad_answer")
    values: dict[str, Any] = {}
    for question in questions:
        key = question["key"]
        if partial and key not in raw:
            continue
        value = raw.get(key)
        keys = {c["key"] for c in question.get("choices", [])}
        name = label(question, get_language() or "ja")
        if question["kind"] == "text":
            value = _text(value, MAX_TEXT)
            if value:
                values[key] = value
        elif question["kind"] == "single":
            if value in (None, ""):
                value = None
            elif not isinstance(value, str) or value not in keys:
                raise ApplicationError(_("That is not one of the choices: %(q)s") % {"q": name}, code="bad_answer")
            if value is not None:
                values[key] = value
        else:
            if value in (None, ""):
                value = []
            if not isinstance(value, list) or any(not isinstance(v, str) or v not in keys for v in value):
                raise ApplicationError(_("That is not one of the choices: %(q)s") % {"q": name}, code="bad_answer")
            if value:
                values[key] = sorted(set(value), key=[c["key"] for c in question["choices"]].index)
        if question.get("required") and key not in values:
            raise ApplicationError(_("Please answer: %(q)s") % {"q": name}, code="bad_answer")
    if not values and questions:
        raise ApplicationError(_("Choose at least one answer."), code="bad_answer")
    safety = values.get(SAFETY_KEY)
    status = safety if safety in SAFETY_CHOICES else "answered"
    return CleanAnswer(values=values, status=status, needs_help=values.get(HELP_KEY) == "yes")


def quick_answers(questions: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """The one-tap answers a notification offers for this form, by action: "safe" (無事) and "help" (要支援), each
    with the values it posts. An action the form cannot take is left out: 無事 needs the safety question with its
    "safe" choice (and says "no help needed" where the help question exists); 要支援 says "yes" to the help
    question, or, without one, answers the safety question "serious"."""
    choices = {q["key"]: {c["key"] for c in q.get("choices", [])} for q in questions if q.get("kind") == "single"}
    actions: dict[str, dict[str, str]] = {}
    if "safe" in choices.get(SAFETY_KEY, set()):
        actions["safe"] = {SAFETY_KEY: "safe", **({HELP_KEY: "no"} if "no" in choices.get(HELP_KEY, set()) else {})}
    if "yes" in choices.get(HELP_KEY, set()):
        actions["help"] = {HELP_KEY: "yes"}
    elif "serious" in choices.get(SAFETY_KEY, set()):
        actions["help"] = {SAFETY_KEY: "serious"}
    return actions
