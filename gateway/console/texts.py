"""The console's texts, English and Russian, from its gettext catalogue (`gateway.i18n`).

The catalogue is `gateway/console/locale/<language>/LC_MESSAGES/console.po`. Templates look
texts up by key (`t("nav.parked")`, `tn("replayed", count, n=count)`); the keys are listed
here with `N_` so the catalogue test's extractor sees them, and a console test checks that
every key a template uses is listed.
"""

from __future__ import annotations

from gateway.i18n import N_, Catalogue

CATALOGUE = Catalogue.of_package("gateway.console", domain="console")
LANGUAGES = ("en", "ru")

#: Every key the templates use (plural keys are looked up with `tn`).
KEYS = (
    *(N_("title"), N_("skip"), N_("nav"), N_("nav.overview"), N_("nav.routes")),
    *(N_("nav.parked"), N_("nav.trace"), N_("nav.plugins"), N_("language")),
    *(N_("signin.title"), N_("signin.token"), N_("signin.help"), N_("signin.submit")),
    *(N_("signin.wrong"), N_("signin.disabled"), N_("signout"), N_("signedout")),
    *(N_("expired"), N_("forbidden"), N_("instances"), N_("instance"), N_("kind")),
    *(N_("provider"), N_("state"), N_("phone"), N_("qr"), N_("qr.alt"), N_("last_error")),
    *(N_("queue"), N_("destination"), N_("depth"), N_("parked"), N_("oldest")),
    *(N_("seconds"), N_("queue.empty"), N_("chart"), N_("chart.received")),
    *(N_("chart.delivered"), N_("chart.parked"), N_("chart.depth"), N_("routes")),
    *(N_("route"), N_("channel"), N_("crm"), N_("target"), N_("direction"), N_("origin")),
    *(N_("origin.settings"), N_("origin.store"), N_("unlink"), N_("unlink.settings")),
    *(N_("link"), N_("link.name"), N_("link.target"), N_("link.submit"), N_("linked")),
    *(N_("unlinked"), N_("routes.none"), N_("parked.none"), N_("job"), N_("reason")),
    *(N_("conversation"), N_("parked_at"), N_("attempts"), N_("select"), N_("replay")),
    *(N_("replay.selected"), N_("replay.conversation"), N_("replay.window")),
    *(N_("replay.since"), N_("replay.until"), N_("replayed"), N_("replayed_as")),
    *(N_("replay_of"), N_("error.job"), N_("error.selection"), N_("error.window")),
    *(N_("error.route"), N_("trace"), N_("trace.query"), N_("trace.submit")),
    *(N_("trace.none"), N_("trace.received"), N_("trace.job"), N_("time"), N_("step")),
    *(N_("detail"), N_("plugins"), N_("plugin"), N_("module"), N_("loaded")),
    *(N_("providers"), N_("error"), N_("yes"), N_("no"), N_("chart.table")),
    *(N_("trace.help"), N_("trace.event"), N_("trace.queued"), N_("trace.attempt")),
    # Looked up by name in trace.py: trace.<step>, trace.state.<state>.
    *(N_("trace.state.waiting"), N_("trace.state.parked"), N_("trace.state.delivered")),
    *(N_("trace.state.replayed"), N_("trace.delivered"), N_("trace.delivered.bare")),
    *(N_("trace.retried"), N_("trace.parked"), N_("trace.replayed")),
    *(N_("attention"), N_("attention.none"), N_("attention.unrouted")),
    *(N_("nav.unrouted"), N_("unrouted.help"), N_("unrouted.held_again")),
    *(N_("unrouted.waiting"), N_("unrouted.since"), N_("unrouted.none"), N_("unrouted.parked")),
    *(N_("unrouted.select"), N_("unrouted.replay_selected"), N_("unrouted.replay_all")),
    *(N_("unrouted.parked_none"),),
)


def translate(language: str, key: str, /, **values: object) -> str:
    return CATALOGUE.translator(language).gettext(key, **values)


def translate_plural(language: str, key: str, count: int, /, **values: object) -> str:
    return CATALOGUE.translator(language).ngettext(key, count, **values)


def pick_language(chosen: str | None, accept_language: str) -> str:
    """The console language: an explicit choice, else the browser's first supported one."""
    if chosen in LANGUAGES:
        return str(chosen)
    preferences = [part.split(";")[0].strip() for part in accept_language.split(",")]
    return CATALOGUE.choose(*preferences)
