"""REST endpoints of automatic dispatch (自動一斉送信) under /<slug>/api/safety/auto/: the rules, the drill-mode
switch, verification (検証: who a made-up report would reach), replay (what real JMA messages, uploaded or
stored, would do with today's rules), the audit log of decisions and the stored documents to replay.

Only crisis managers and safety administrators (`can_manage_incidents`) may use any of it. Verification and
replay run the same decision as the live path on the current rules and directory and store and send nothing.
Views validate, fetch through the organisation, call one service or selector and shape the answer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.http import QueryDict
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from config.errors import ApplicationError
from config.params import is_id
from directory.api import OrgAPIView
from directory.models import Organization
from directory.permissions import PasswordChanged
from safety import autodispatch, escalation, selectors_auto
from safety.api_safety import ManagesIncidents
from safety.jma.decide import HAZARDS, Outcome
from safety.jma.parser import JmaParseError
from safety.models import DispatchRule, JmaDecision, JmaDocument

MAX_FILES = 50
TARGETS_MAX = 500  # login IDs listed per replayed document; "count" is the full number
_TRUE, _FALSE = ("true", "1", "on", "yes"), ("false", "0", "off", "no")


class _AutoView(OrgAPIView):
    permission_classes = [IsAuthenticated, PasswordChanged, ManagesIncidents]


# --- Shapes -------------------------------------------------------------------------------------------------


def rule_data(rule: DispatchRule) -> dict[str, Any]:
    return {
        "id": rule.id,
        **{name: getattr(rule, name) for name in autodispatch.RULE_FIELDS},
        "is_preset": rule.is_preset,
        "created_at": rule.created_at.isoformat(),
        "updated_at": rule.updated_at.isoformat(),
    }


def _rules(ids: Iterable[int], names: Mapping[int, str]) -> list[dict[str, Any]]:
    """[{id, name}] in id order; a rule deleted since has no name (None)."""
    return [{"id": i, "name": names.get(i)} for i in sorted(set(ids))]


def _outcome_rule_ids(outcome: Outcome) -> set[int]:
    return {*outcome.rule_ids, *(r for a in outcome.actions for r in a.rule_ids)}


def decision_data(decision: JmaDecision, names: Mapping[int, str]) -> dict[str, Any]:
    document = decision.document
    return {
        "id": decision.id,
        "decided_at": decision.decided_at.isoformat(),
        "document": {
            "id": document.id,
            "title": document.title,
            "url": document.url,
            "status": document.status,
            "info_type": document.info_type,
            "report_datetime": document.report_datetime.isoformat() if document.report_datetime else None,
        },
        "decision": decision.decision,
        "hazard": decision.hazard or None,
        "drill": decision.drill,
        "reason": decision.reason,
        "reason_code": decision.reason_code,
        "rules": _rules(decision.rule_ids, names),
        "new_count": len(decision.new_person_ids),
        "withdrawn_count": len(decision.withdrawn_person_ids),
        "incident_ids": decision.incident_ids,
        "due_at": decision.due_at.isoformat() if decision.due_at else None,
        "executed_at": decision.executed_at.isoformat() if decision.executed_at else None,
    }


def document_data(document: JmaDocument) -> dict[str, Any]:
    return {
        "id": document.id,
        "title": document.title,
        "kind": document.kind,
        "type_code": document.type_code,
        "status": document.status,
        "info_type": document.info_type,
        "event_ids": document.event_ids,
        "serial": document.serial,
        "report_datetime": document.report_datetime.isoformat() if document.report_datetime else None,
        "received_at": document.received_at.isoformat(),
        "headline": document.headline,
    }


# --- Inputs -------------------------------------------------------------------------------------------------


def _json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object (forms and lists are refused: field types matter here)."""
    data = request.data
    if isinstance(data, QueryDict) or not isinstance(data, dict):
        raise ApplicationError(_("Send a JSON object."), code="bad_request")
    return data


def _rule_fields(request: Request) -> dict[str, Any]:
    """The rule fields of the body; anything else is refused here, before it could reach a service keyword."""
    data = _json_object(request)
    unknown = sorted(set(data) - set(autodispatch.RULE_FIELDS))
    if unknown:
        raise ApplicationError(_("Unknown field: %(name)s") % {"name": unknown[0]}, code="bad_rule")
    return dict(data)


def _flag(raw: Any, name: str) -> bool | None:
    """An optional true/false: JSON booleans, or the words a form sends. Absent or null is None."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE + _FALSE:
        return raw.strip().lower() in _TRUE
    raise ApplicationError(_("%(name)s must be true or false.") % {"name": name}, code="bad_request")


# --- Rules and the drill-mode switch ------------------------------------------------------------------------


class RulesApi(_AutoView):
    """GET: every rule of the organisation and the drill-mode switch. POST: add a rule (201)."""

    def get(self, request: Request, slug: str) -> Response:
        rules = selectors_auto.rule_list(organization=self.organization)
        return Response(
            {
                "rules": [rule_data(r) for r in rules],
                "drill_mode": selectors_auto.drill_mode_get(organization=self.organization),
            }
        )

    def post(self, request: Request, slug: str) -> Response:
        fields = _rule_fields(request)
        rule = autodispatch.rule_create(organization=self.organization, actor=self.person, **fields)
        return Response(rule_data(rule), status=201)


class RuleApi(_AutoView):
    def _rule(self, rule_id: int) -> DispatchRule:
        return get_object_or_404(DispatchRule, organization=self.organization, id=rule_id)

    def get(self, request: Request, slug: str, rule_id: int) -> Response:
        return Response(rule_data(self._rule(rule_id)))

    def patch(self, request: Request, slug: str, rule_id: int) -> Response:
        rule = self._rule(rule_id)
        fields = _rule_fields(request)
        return Response(rule_data(autodispatch.rule_update(rule=rule, actor=self.person, **fields)))

    def delete(self, request: Request, slug: str, rule_id: int) -> Response:
        autodispatch.rule_delete(rule=self._rule(rule_id), actor=self.person)
        return Response(status=204)


class SettingsApi(_AutoView):
    """GET/PUT/PATCH {"drill_mode": bool, "escalate_after_minutes": int}: while drill mode is on, 訓練 messages
    dispatch as drill incidents; a person still unanswered this many minutes after a send is sent it again on
    every channel (0: never; safety.escalation). A write changes the keys it gives, and needs at least one."""

    def _data(self) -> dict[str, Any]:
        return {
            "drill_mode": selectors_auto.drill_mode_get(organization=self.organization),
            "escalate_after_minutes": escalation.escalate_minutes_get(organization_id=self.organization.id),
        }

    def get(self, request: Request, slug: str) -> Response:
        return Response(self._data())

    def put(self, request: Request, slug: str) -> Response:
        data = _json_object(request)
        value = data.get("drill_mode")
        # Either key may come alone; with neither (or a bad drill_mode) the answer names drill_mode, as it did
        # before there was a second key. Both are checked before anything is written.
        if ("escalate_after_minutes" not in data or "drill_mode" in data) and not isinstance(value, bool):
            raise ApplicationError(_("drill_mode must be true or false."), code="bad_request")
        if "escalate_after_minutes" in data:
            minutes = escalation.escalate_minutes_clean(data["escalate_after_minutes"])
        with transaction.atomic():
            if isinstance(value, bool):
                autodispatch.drill_mode_set(organization=self.organization, actor=self.person, drill_mode=value)
            if "escalate_after_minutes" in data:
                escalation.escalate_minutes_set(organization=self.organization, actor=self.person, minutes=minutes)
        return Response(self._data())

    patch = put


# --- Verify and replay (nothing stored, nothing sent) -----------------------------------------------------------


class VerifyApi(_AutoView):
    """POST {hazard, area, level}: who a report of `hazard` at `level` in `area` would reach today, and which
    rules fire. `area`: a prefecture code, or a 細分区域 (earthquake), coast (tsunami) or municipality (special
    warning) code; `level`: an intensity ("5-", "6+" …), a tsunami level ("advisory", "warning", "major") or a
    special-warning kind ("33" …)."""

    def post(self, request: Request, slug: str) -> Response:
        data = _json_object(request)
        hazard, area, level = data.get("hazard"), data.get("area"), data.get("level")
        if hazard not in HAZARDS:
            raise ApplicationError(_("Choose earthquake, tsunami or special warning."), code="bad_verify")
        if not isinstance(area, str) or not area.strip():
            raise ApplicationError(_("Choose an area."), code="bad_verify")
        if not isinstance(level, str) or not level.strip():
            raise ApplicationError(_("Choose a level."), code="bad_verify")
        try:
            outcome = autodispatch.verify(self.organization, hazard=hazard, area=area.strip(), level=level.strip())
        except ValueError as exc:
            raise ApplicationError(str(exc), code="bad_verify") from None
        names = selectors_auto.rule_names(organization=self.organization, rule_ids=_outcome_rule_ids(outcome))
        people = selectors_auto.people_rows(organization=self.organization, person_ids=outcome.new_ids)
        return Response(
            {
                "decision": outcome.decision,
                "reason": outcome.reason,
                "reason_code": outcome.reason_code,
                "rules": _rules(_outcome_rule_ids(outcome), names),
                "count": len(outcome.new_ids),
                "people": [
                    {
                        "id": p.id,
                        "login_id": p.login_id,
                        "name": p.display_name,
                        "department": p.department.name if p.department else "",
                        "region_code": p.region_code,
                    }
                    for p in people
                ],
            }
        )


def _read_uploads(uploads: Sequence[UploadedFile[bytes]]) -> list[tuple[str, bytes]]:
    limit = settings.JMA_MAX_DOCUMENT_BYTES
    documents: list[tuple[str, bytes]] = []
    for upload in uploads:
        name = upload.name or "?"
        if upload.size is not None and upload.size > limit:
            raise _too_large(name, limit)
        raw = upload.read(limit + 1)
        if len(raw) > limit:
            raise _too_large(name, limit)
        if not raw.strip():
            raise ApplicationError(_("%(file)s is empty.") % {"file": name}, code="jma_empty")
        documents.append((name, raw))
    return documents


def _too_large(name: str, limit: int) -> ApplicationError:
    return ApplicationError(
        _("%(file)s is larger than %(limit)d bytes, the limit for a JMA document.") % {"file": name, "limit": limit},
        code="jma_too_large",
        status=413,
    )


def _stored_documents(raw_ids: Any) -> list[tuple[str, bytes]]:
    if (
        not isinstance(raw_ids, list)
        or not raw_ids
        or not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i < 2**63 for i in raw_ids)
    ):
        raise ApplicationError(_("document_ids must be a list of document ids."), code="bad_replay")
    if len(raw_ids) > MAX_FILES:
        raise ApplicationError(
            _("Replay at most %(max)d documents at a time.") % {"max": MAX_FILES}, code="too_many_files"
        )
    found = selectors_auto.documents_raw(document_ids=raw_ids)
    unknown = [i for i in dict.fromkeys(raw_ids) if i not in found]
    if unknown:
        # A stored document is the JMA's, not an organisation's: an unknown id is bad input (400), not a page.
        raise ApplicationError(
            _("Unknown documents: %(ids)s") % {"ids": ", ".join(map(str, unknown[:10]))}, code="unknown_document"
        )
    return [(found[i].url, bytes(found[i].raw)) for i in raw_ids]


class ReplayApi(_AutoView):
    """POST multipart `files` (1–50 JMA XML files) or JSON {"document_ids": [...]} (stored documents, in the order
    given), with an optional "drill_mode" (default: the organisation's switch): what today's rules and directory
    would do with them, in order, from an empty state. A file that does not parse is a 400 naming it."""

    def post(self, request: Request, slug: str) -> Response:
        # The multipart body (files included) was read and parsed before any view, by the request middleware.
        data, uploads = request.data, request.FILES.getlist("files")
        if uploads:
            if len(uploads) > MAX_FILES:
                raise ApplicationError(
                    _("Replay at most %(max)d documents at a time.") % {"max": MAX_FILES}, code="too_many_files"
                )
            documents = _read_uploads(uploads)
        elif isinstance(data, dict) and not isinstance(data, QueryDict) and "document_ids" in data:
            documents = _stored_documents(data["document_ids"])
        else:
            raise ApplicationError(
                _("Upload 1 to %(max)d JMA XML files, or choose stored documents.") % {"max": MAX_FILES},
                code="bad_replay",
            )
        options: Mapping[str, Any] = data if isinstance(data, dict) else {}
        drill_mode = _flag(options.get("drill_mode"), "drill_mode")
        if drill_mode is None:
            # Read here, not by the service: reading never creates the organisation's settings row.
            drill_mode = selectors_auto.drill_mode_get(organization=self.organization)
        return Response({"results": replay_results(self.organization, documents, drill_mode=drill_mode)})


def replay_results(
    organization: Organization, documents: Sequence[tuple[str, bytes]], *, drill_mode: bool
) -> list[dict[str, Any]]:
    """One line per document (what `jma_replay --json` prints), with the rules that fired and the full counts;
    the login-ID lists stop at TARGETS_MAX."""
    try:
        lines = autodispatch.replay(organization, documents, drill_mode=drill_mode)
    except JmaParseError as exc:
        raise ApplicationError(
            _("A file could not be read as a JMA report: %(error)s") % {"error": str(exc)}, code="jma_parse_error"
        ) from None
    fired = {r for _line, outcome in lines for r in _outcome_rule_ids(outcome)}
    names = selectors_auto.rule_names(organization=organization, rule_ids=fired)
    results = []
    for line, outcome in lines:
        results.append(
            {
                **line,
                "new_targets": line["new_targets"][:TARGETS_MAX],
                "withdrawn_targets": line["withdrawn_targets"][:TARGETS_MAX],
                "reason_code": outcome.reason_code,
                "rules": _rules(_outcome_rule_ids(outcome), names),
                "count": len(line["new_targets"]),
                "withdrawn_count": len(line["withdrawn_targets"]),
            }
        )
    return results


# --- The audit log and the stored documents -----------------------------------------------------------------


class DecisionsApi(_AutoView):
    """GET ?page=N (50 a page): what every JMA report decided for this organisation and why, newest first."""

    def get(self, request: Request, slug: str) -> Response:
        raw = request.query_params.get("page", "")
        if raw and (not is_id(raw) or not 1 <= int(raw) <= 1_000_000):
            raise ApplicationError(_("page must be a page number."), code="bad_page")
        page = selectors_auto.decision_page(organization=self.organization, page=int(raw) if raw else 1)
        names = selectors_auto.rule_names(
            organization=self.organization, rule_ids={r for d in page.decisions for r in d.rule_ids}
        )
        return Response(
            {
                "decisions": [decision_data(d, names) for d in page.decisions],
                "count": page.count,
                "page": page.page,
                "per_page": selectors_auto.DECISIONS_PER_PAGE,
                "has_more": page.has_more,
            }
        )


class DocumentsApi(_AutoView):
    """GET [?kind=earthquake|tsunami|weather]: stored JMA documents to replay, newest first (at most 200)."""

    def get(self, request: Request, slug: str) -> Response:
        kind = request.query_params.get("kind", "")
        if kind and kind not in selectors_auto.DOCUMENT_KINDS:
            raise ApplicationError(_("kind must be earthquake, tsunami or weather."), code="bad_kind")
        return Response({"documents": [document_data(d) for d in selectors_auto.document_list(kind=kind)]})


class DecisionCancelApi(_AutoView):
    """POST: stop a dispatch that is still on hold (the report looks false). 409 once it has gone."""

    def post(self, request: Request, slug: str, decision_id: int) -> Response:
        decision = autodispatch.decision_cancel(
            organization=self.organization, decision_id=decision_id, actor=self.person
        )
        names = selectors_auto.rule_names(organization=self.organization, rule_ids=decision.rule_ids)
        return Response(decision_data(decision, names))


class DecisionSendNowApi(_AutoView):
    """POST: send a dispatch that is on hold now. 409 once it has gone."""

    def post(self, request: Request, slug: str, decision_id: int) -> Response:
        autodispatch.decision_send_now(organization=self.organization, decision_id=decision_id, actor=self.person)
        decision = JmaDecision.objects.select_related("document").get(id=decision_id)
        names = selectors_auto.rule_names(organization=self.organization, rule_ids=decision.rule_ids)
        return Response(decision_data(decision, names))
