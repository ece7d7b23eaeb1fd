"""The web console in a real browser (Debian's headless Chromium driven by Selenium).

With the real daemons (net-snmp ``snmptrap`` -> ``centaure-traps`` -> RabbitMQ ->
``centaure-correlator`` -> ``centaure-console``), what an operator checks:

* nothing is readable without logging in; a wrong password, a login form
  without its CSRF token and a session the console does not know (expired)
  get a page saying why, with 401 or 403;
* logged in as an operator, a linkDown sent with ``snmptrap`` appears on the
  open board without reloading the page; acked with a note from the alarm's
  page, ``centaure alarms`` shows the ack by that person, and a second browser
  session (a viewer's) sees the ack arrive live;
* the viewer's alarm page has no buttons, and a POST forged with the viewer's
  own session and CSRF token is refused (403), as is the operator's POST
  without CSRF token; neither changes the alarm; the operator's clear takes it
  off the viewer's open board;
* a silence added from the Silences page (after a form with a bad duration
  said so) is listed with its author for the viewer, who has no buttons and
  whose forged expiry is refused (403); the operator expires it;
* the alarm page shows the stored history; a device's graph draws exactly the
  samples stored in its range and says "raw samples"; rolled up, its last 30 days
  are the hourly averages with their min–max band (then the samples not rolled up
  yet), and it says so; the connectors' table lists the daemons; the
  live indicator says "reconnecting" while the console is down.

Screenshots of the board go to ``test-artifacts/console/`` (or
``$CENTAURE_TEST_ARTIFACTS/console``), printed by the test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from centaure.shipped import example_path
from centaure_shared.storage.silences import make_table as silences_table
from connector.permissions import connector_rights
from tests.conftest import AMQP_URL, MARIADB_URL, ROOT, _delete_prefixed, rabbitmqctl, settings_text
from tests.integration.daemons import BIN, TwistdDaemon
from tests.integration.private_mariadb import free_tcp_port
from tests.integration.support import declare_consumer_queues, drop_prefixed_tables
from tests.snmp.snmpd import free_udp_port, tool_env

pytestmark = pytest.mark.integration

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import TimeoutException, WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
LINK_DOWN = "1.3.6.1.6.3.1.1.5.3"
IF_INDEX = "1.3.6.1.2.1.2.2.1.1"
USERS = {"alice": ("operator", "alice's long passphrase"), "victor": ("viewer", "victor pw 42")}
ARTIFACTS = Path(os.environ.get("CENTAURE_TEST_ARTIFACTS", os.path.join(ROOT, "test-artifacts"))) \
    / "console"
#: Longest wait for something the page shows (a generous bound, not a timing).
WAIT = 30


def browser():
    """A headless Chromium of Debian's packages (no browser download)."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("chromium and chromium-driver are not installed (scripts/bootstrap.sh)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,800", "--lang=en-US"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


class Site:
    """The running daemons, the console's address and its settings files."""

    def __init__(self, base: str, corr_ini: Path, console: TwistdDaemon, trap_port: int,
                 home: Path, prefix: str, db_prefix: str) -> None:
        self.prefix = prefix
        self.db_prefix = db_prefix
        self.base = base
        self.corr_ini = corr_ini
        self.console = console
        self.trap_port = trap_port
        self.home = home

    def snmptrap(self, uptime: int, if_index: int) -> None:
        out = subprocess.run(
            ["snmptrap", "-M", "/dev/null", "-v", "2c", "-c", "public",
             f"127.0.0.1:{self.trap_port}", str(uptime), LINK_DOWN, f"{IF_INDEX}.{if_index}",
             "i", str(if_index)],
            capture_output=True, text=True, env=tool_env(self.home), timeout=30)
        assert out.returncode == 0, out.stderr

    def alarms(self) -> list[dict]:
        """``centaure alarms --json``, as an operator would run it."""
        out = subprocess.run([sys.executable, "-m", "centaure.cli", "alarms", "-c",
                              str(self.corr_ini), "--json"], capture_output=True, text=True,
                             cwd=ROOT, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Trap receiver, correlator, SQL writer (MariaDB) and console on RabbitMQ, the console
    under its own broker
user (the rights ``bus-config --definitions`` gives it), trusted by the correlator."""
    tmp = tmp_path_factory.mktemp("console")
    prefix = f"t{uuid.uuid4().hex[:10]}"
    tables = {"db": f"w{prefix[1:9]}_", "correlator": f"c{prefix[1:9]}_",
              "alerter": f"a{prefix[1:9]}_"}
    console_user, console_pw = f"console-{prefix}", uuid.uuid4().hex
    rights = connector_rights(prefix, "console")
    rabbitmqctl("add_user", console_user, console_pw)
    daemons: list[TwistdDaemon] = []
    try:
        rabbitmqctl("set_permissions", "-p", "/", console_user, rights["configure"],
                    rights["write"], rights["read"])
        declare_consumer_queues(prefix, "correlator", "console", "db")
        shutil.copy(example_path("traps.yaml"), tmp / "traps.yaml")
        (tmp / "inventory.yaml").write_text(
            "devices:\n  - {name: sw-core, address: 127.0.0.1, device_type: switch}\n")
        correlator = {"batch_interval": "20ms", "tick_interval": "0.2s",
                      "command_services": console_user, "table_prefix": tables["correlator"]}
        db = {"table_prefix": tables["db"], "batch_interval": "20ms"}
        trap_port, corr_port, console_port = free_udp_port(), free_tcp_port(), free_tcp_port()
        corr_ini = tmp / "correlator.ini"
        corr_ini.write_text(settings_text(prefix, tmp, connector={"http_port": str(corr_port)},
                                          database={"url": MARIADB_URL}, correlator=correlator,
                                          db=db))
        db_ini = tmp / "db.ini"
        db_ini.write_text(settings_text(prefix, tmp, database={"url": MARIADB_URL}, db=db))
        traps_ini = tmp / "traps.ini"
        traps_ini.write_text(settings_text(
            prefix, tmp, traps={"listen": f"127.0.0.1:{trap_port}", "definitions": "traps.yaml",
                                "dedup_window": "0"}))
        console_ini = tmp / "console.ini"
        console_ini.write_text(settings_text(
            prefix, tmp, url=f"amqp://{console_user}:{console_pw}@127.0.0.1:5672/%2F",
            database={"url": MARIADB_URL}, correlator=correlator, db=db,
            alerter={"table_prefix": tables["alerter"]}, console={"port": str(console_port), "users_file": str(tmp / "users.yaml")}))
        for name, (role, password) in USERS.items():
            out = subprocess.run([f"{BIN}/centaure", "console", "add-user", name, "--role", role,
                                  "--password-stdin", "-c", str(console_ini)],
                                 input=password + "\n", capture_output=True, text=True,
                                 cwd=ROOT, timeout=60)
            assert out.returncode == 0, out.stderr
        assert (tmp / "users.yaml").stat().st_mode & 0o077 == 0
        assert "passphrase" not in (tmp / "users.yaml").read_text()

        # The alerter's silences table, where the console's Silences page writes.
        engine = sa.create_engine(MARIADB_URL)
        silences_table(tables["alerter"]).metadata.create_all(engine)
        engine.dispose()
        daemons.append(TwistdDaemon("centaure-correlator", corr_ini, corr_port))
        daemons.append(TwistdDaemon("centaure-traps", traps_ini))
        daemons.append(TwistdDaemon("centaure-db", db_ini))
        console = TwistdDaemon("centaure-console", console_ini)
        daemons.append(console)
        daemons[0].wait_health(lambda status, body: body.get("connectors", {})
                               .get("correlator", {}).get("state") == "ready")
        daemons[1].wait_log("receiving traps on")
        daemons[2].wait_log("ready (schema")
        console.wait_log("alarm board loaded")
        yield Site(f"http://127.0.0.1:{console_port}", corr_ini, console, trap_port,
                   tmp / "nethome", prefix, tables["db"])
        logs = console.logs()
        assert console_pw not in logs
        assert not any(password in logs for _, password in USERS.values())
    finally:
        for daemon in daemons:
            daemon.stop()
        try:
            rabbitmqctl("delete_user", console_user)
        finally:
            _delete_prefixed(prefix)
            drop_prefixed_tables(MARIADB_URL, tuple(tables.values()))


def logged_in(site: Site, name: str):
    """A browser of its own, ``name`` logged in, on the board; closed at the end."""
    driver = browser()
    try:
        login(driver, site, name)
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def operator(site):
    """The operator's browser, logged in, on the board."""
    yield from logged_in(site, "alice")


@pytest.fixture(scope="module")
def viewer(site):
    """A second session: the viewer's browser, logged in, on the board."""
    yield from logged_in(site, "victor")


def login(driver, site: Site, name: str, password: str | None = None) -> None:
    driver.get(site.base + "/")
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(password or USERS[name][1])
    submit(driver, "login")


def submit(driver, button: str) -> None:
    """Press a form's button and wait for the next page (a new document)."""
    driver.execute_script("window.beforeSubmit = true;")
    driver.find_element(By.ID, button).click()
    # A script run while the browser swaps documents may fail: asked again.
    WebDriverWait(driver, WAIT, poll_frequency=0.05,
                  ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script("return document.readyState === 'complete' "
                                   "&& window.beforeSubmit === undefined;"))


def act(driver, button: str, action: str | None = None) -> None:
    """Press an alarm page's button and wait for the page saying the command was sent."""
    submit(driver, button)
    wait_for(driver, lambda d: f"{action or button} sent" in " ".join(
        e.text for e in d.find_elements(By.ID, "sent")), f"'{action or button} sent'")


def wait_for(driver, condition, what: str):
    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.05).until(condition)
    except TimeoutException:
        raise AssertionError(f"the page never showed {what}:\n"
                             f"{driver.find_element(By.TAG_NAME, 'body').text}") from None


def live(driver) -> None:
    wait_for(driver, lambda d: d.find_element(By.ID, "live").get_attribute("data-state")
             == "live-on", "the live indicator")


def row(driver, ref: str) -> list[str] | None:
    """The texts of alarm ``ref``'s cells on the board, None when it is not there.

    Read in one script: the page redraws its rows as changes come, so an element
    found one call earlier may be gone.
    """
    return driver.execute_script(
        "const tr = document.querySelector(`#alarms tr[data-ref='${arguments[0]}']`);"
        "return tr ? Array.from(tr.cells, (c) => c.textContent.trim()) : null;", ref)


def post(site: Site, path: str, fields: dict, cookies: dict | None = None) -> tuple[int, str]:
    """(status, body) of a POST made outside the browser (a forged form)."""
    request = urllib.request.Request(site.base + path, data=urllib.parse.urlencode(fields)
                                     .encode(), method="POST")
    if cookies:
        request.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()))

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def get(site: Site, path: str, cookies: dict | None = None) -> tuple[int, str]:
    request = urllib.request.Request(site.base + path)
    if cookies:
        request.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()))
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def session_of(driver) -> dict:
    cookie = driver.get_cookie("centaure_session")
    assert cookie is not None, driver.get_cookies()
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    return {"centaure_session": cookie["value"]}


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def test_nothing_is_readable_without_a_good_login(site):
    driver = browser()
    try:
        for path in ("/", "/api/alarms", "/events", "/alarm/1"):
            status, body = get(site, path)
            assert status == 401, path
            assert "Log in to see the console." in body and "sw-core" not in body

        login(driver, site, "alice", "not her password")
        assert driver.find_element(By.ID, "reason").text == "Wrong name or password."
        assert driver.get_cookie("centaure_session") is None
        status, body = post(site, "/login", {"name": "alice", "password": USERS["alice"][1],
                                            "next": "/"})
        assert status == 403 and "did not come from this console" in body

        # A session the console does not know (expired, or the console restarted).
        status, body = get(site, "/", {"centaure_session": "expired-or-made-up"})
        assert status == 401 and "Your session has expired: log in again." in body
    finally:
        driver.quit()
    assert "failed login for 'alice'" in site.console.logs()
    # Its broker user is a trusted command service: no warning about it.
    assert "not in [correlator] command_services" not in site.console.logs()


def test_a_trap_appears_live_and_the_ack_reaches_every_board(site, operator, viewer):
    for driver in (operator, viewer):
        live(driver)
        assert driver.find_element(By.ID, "whoami").text in USERS
        # Set on the page as it is now: still there later means it was never reloaded.
        driver.execute_script("window.notReloaded = true;")
    before = {r["ref"] for r in site.alarms()}

    site.snmptrap(100, 3)
    wait_for(operator, lambda d: len(d.find_elements(By.CSS_SELECTOR, "tbody tr")) > len(before),
             "the linkDown alarm")
    (alarm,) = [a for a in site.alarms() if a["ref"] not in before]
    ref = str(alarm["ref"])
    cells = row(operator, ref)
    assert cells[:3] == ["major", "sw-core", "linkDown"] and cells[6] == "1"
    assert cells[7] == ""  # not acked
    wait_for(viewer, lambda d: row(d, ref) is not None, "the alarm on the second board")
    screenshot(operator, "board-new-alarm.png")

    # The operator opens the alarm and acks it with a note.
    operator.execute_script(  # clicked from a script: the row may be redrawn meanwhile
        "document.querySelector(`#alarms tr[data-ref='${arguments[0]}'] td.name a`).click();",
        ref)
    wait_for(operator, lambda d: d.find_elements(By.ID, "note"), "the alarm's page")
    operator.find_element(By.ID, "note").send_keys("on it, replacing the SFP")
    act(operator, "ack")

    # The viewer's board shows the ack, live.
    wait_for(viewer, lambda d: (row(d, ref) or [""] * 8)[7] == "alice",
             "the ack by alice")
    assert viewer.execute_script("return window.notReloaded === true;")
    operator.get(site.base + "/")
    live(operator)

    (listed,) = [a for a in site.alarms() if str(a["ref"]) == ref]
    assert listed["acked_by"] == "alice" and listed["active"] is True
    operator.get(f"{site.base}/alarm/{ref}")
    assert operator.find_element(By.ID, "acked-by").text.startswith("alice at ")
    assert "alice: on it, replacing the SFP" in operator.find_element(By.ID, "notes").text
    wait_for(operator, lambda d: "alice" in d.find_element(By.ID, "history").text
             or d.refresh(), "the ack in the stored history")
    states = [tr.find_elements(By.TAG_NAME, "td")[1].text
              for tr in operator.find_elements(By.CSS_SELECTOR, "#history tbody tr")]
    assert states[0] == "raised" and states[-1] == "updated"
    assert "No notification sent for it." in operator.find_element(By.ID, "notifications").text
    screenshot(operator, "alarm.png")
    # Acked: the operator's page now offers unack instead.
    assert operator.find_elements(By.ID, "unack") and not operator.find_elements(By.ID, "ack")


def test_a_viewer_cannot_act_and_forms_need_their_csrf_token(site, operator, viewer):
    before = {r["ref"] for r in site.alarms()}
    site.snmptrap(200, 7)
    wait_for(viewer, lambda d: len(d.find_elements(By.CSS_SELECTOR, "tbody tr")) > len(before),
             "the second alarm")
    (alarm,) = [a for a in site.alarms() if a["ref"] not in before]
    ref = str(alarm["ref"])

    # The board's filters apply as one types, without a reload.
    def shown(d) -> set[str]:
        # Read in one go: the script redraws the rows as changes come.
        return set(d.execute_script("return Array.from(document.querySelectorAll("
                                    "'#alarms tbody tr'), (r) => r.dataset.ref);"))

    acked = {str(a["ref"]) for a in site.alarms() if a["acked_by"]}
    viewer.find_element(By.ID, "f-text").send_keys("interface 7")
    wait_for(viewer, lambda d: shown(d) == {ref}, "only the second alarm")
    viewer.find_element(By.ID, "f-text").clear()
    Select(viewer.find_element(By.ID, "f-acked")).select_by_value("yes")
    wait_for(viewer, lambda d: shown(d) == acked, "only the acked alarm")
    assert "acked=yes" in viewer.current_url  # the filters stay in the address

    viewer.get(f"{site.base}/alarm/{ref}")
    assert viewer.find_element(By.ID, "acked-by").text == "nobody"
    assert viewer.find_elements(By.CSS_SELECTOR, "main button") == []
    assert viewer.find_elements(By.ID, "commands") == []

    # The viewer forges the operator's form with its own valid session and CSRF token.
    csrf = viewer.find_element(By.CSS_SELECTOR, 'form[action="/logout"] input[name="csrf"]') \
        .get_attribute("value")
    status, body = post(site, f"/alarm/{ref}/command", {"csrf": csrf, "action": "ack"},
                        session_of(viewer))
    assert status == 403 and "victor is a viewer" in body
    # The operator's own session, without the CSRF token (another site's form).
    status, body = post(site, f"/alarm/{ref}/command", {"action": "clear"}, session_of(operator))
    assert status == 403 and "missing or wrong CSRF token" in body
    status, body = post(site, f"/alarm/{ref}/command",
                        {"action": "clear", "csrf": "guessed"}, session_of(operator))
    assert status == 403
    # Nothing was sent: the alarm is as it was (an accepted command would be applied by now,
    # as the ack above was; the operator's note below proves the path is open).
    operator.get(f"{site.base}/alarm/{ref}")
    operator.find_element(By.ID, "note").send_keys("looked at it")
    act(operator, "add-note", "note")
    operator.get(f"{site.base}/alarm/{ref}")
    wait_for(operator, lambda d: "looked at it" in d.find_element(By.ID, "notes").text
             or d.refresh(), "the operator's note")
    (listed,) = [a for a in site.alarms() if str(a["ref"]) == ref]
    assert (listed["acked_by"], listed["active"]) == (None, True)
    assert "victor (viewer) tried to command alarm" in site.console.logs()
    operator.get(site.base + "/")
    live(operator)
    screenshot(operator, "board.png")

    # The operator clears it: it leaves the viewer's open board.
    viewer.get(site.base + "/")
    live(viewer)
    assert row(viewer, ref) is not None
    operator.get(f"{site.base}/alarm/{ref}")
    act(operator, "clear")
    wait_for(viewer, lambda d: row(d, ref) is None, "the cleared alarm gone")
    assert ref not in {str(a["ref"]) for a in site.alarms()}  # active alarms only


def test_the_connectors_table_shows_every_running_daemon(site, viewer):
    def listed(driver):
        driver.get(f"{site.base}/connectors")
        states = {tr.get_attribute("data-connector"):
                  tr.find_element(By.CSS_SELECTOR, "td.state").text
                  for tr in driver.find_elements(By.CSS_SELECTOR, "#connectors tbody tr")}
        return states if {"traps", "correlator", "console"} <= set(states) else None

    states = wait_for(viewer, listed, "the three connectors")
    assert {states[c] for c in ("traps", "correlator", "console")} == {"ok"}


def test_a_device_graph_draws_every_sample_of_its_range(site, viewer):
    import pika
    import sqlalchemy as sa

    from centaure_shared.storage import query
    from centaure_shared.storage.schema import make_schema
    from connector import messages
    from connector_db.rollups import build

    now = time.time()
    # 40 samples in the last hour, 5 before it (outside the range drawn).
    stamps = [now - 1800 + 45 * i for i in range(40)] + [now - 7200 + 60 * i for i in range(5)]
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        for n, ts in enumerate(stamps):
            perf = messages.Perf(source="snmp@testnode", ts=ts, host="sw-core",
                                 address="127.0.0.1", device_type="switch", metrics=[
                                     messages.Metric(name="cpuLoad", value=20 + n % 7,
                                                     kind="gauge", unit="%",
                                                     oid="1.3.6.1.2.1.25.3.3.1.2.1")])
            ch.basic_publish(f"{site.prefix}.perf", messages.routing_key(perf),
                             messages.encode(perf),
                             pika.BasicProperties(message_id=uuid.uuid4().hex, type="perf",
                                                  delivery_mode=2))
    finally:
        conn.close()
    engine = sa.create_engine(MARIADB_URL)
    schema = make_schema(site.db_prefix)
    try:
        def stored() -> int:
            try:
                return len(query.samples(engine, schema, "sw-core", "cpuLoad", limit=1000))
            except query.QueryError:
                return 0

        deadline = time.monotonic() + WAIT
        while stored() < len(stamps):
            assert time.monotonic() < deadline, f"{stored()} of {len(stamps)} samples stored"
            time.sleep(0.1)

        viewer.get(f"{site.base}/device?host=sw-core&metric=cpuLoad&range=1h")
        graph = viewer.find_element(By.ID, "graph")
        points = wait_for(viewer, lambda d: graph.get_attribute("data-points"), "the graph")
        start, end = (float(graph.get_attribute(a)) for a in ("data-start", "data-end"))
        in_range = query.samples(engine, schema, "sw-core", "cpuLoad", "", start, end, limit=1000)
        assert int(points) == len(in_range) == 40
        assert graph.get_attribute("data-drawn") == "40"  # uPlot's own count of points
        assert viewer.find_elements(By.CSS_SELECTOR, "#graph canvas")
        assert "40 samples of cpuLoad" in viewer.find_element(By.ID, "graph-status").text
        assert viewer.find_element(By.ID, "graph-resolution").text == "Resolution: raw samples"
        screenshot(viewer, "device.png")

        # Rolled up (what centaure db maintain does), the last 30 days are hourly averages
        # drawn with their min-max band, then the samples not rolled up yet.
        build(engine, schema)
        hourly = query.rollups(engine, schema, "sw-core", "cpuLoad", "", now - 30 * 86400,
                               now + 60, resolution="1h")
        assert hourly
        tail = query.samples(engine, schema, "sw-core", "cpuLoad", "",
                             max(r.ts for r in hourly) + 3600, now + 60, limit=1000)
        viewer.get(f"{site.base}/device?host=sw-core&metric=cpuLoad&range=30d")
        graph = viewer.find_element(By.ID, "graph")
        points = wait_for(viewer, lambda d: graph.get_attribute("data-points"), "the 30d graph")
    finally:
        engine.dispose()
    assert graph.get_attribute("data-resolution") == "1h"
    assert int(points) == int(graph.get_attribute("data-drawn")) == len(hourly) + len(tail)
    assert viewer.find_element(By.ID, "graph-resolution").text.startswith(
        "Resolution: hourly averages, min–max band")
    summary = f"{len(hourly)} hourly averages" + (f" and {len(tail)} samples" if tail else "")
    assert f"{summary} of cpuLoad" in viewer.find_element(By.ID, "graph-status").text
    screenshot(viewer, "device-30d.png")
    # The device's active alarms and last values are on the page too.
    assert "linkDown" in viewer.find_element(By.ID, "device-alarms").text
    assert "cpuLoad" in viewer.find_element(By.ID, "latest").text


def test_silences_are_added_and_expired_from_their_page(site, operator, viewer):
    operator.get(site.base + "/")
    operator.find_element(By.LINK_TEXT, "Silences").click()
    wait_for(operator, lambda d: d.find_elements(By.ID, "add-silence"), "the silence form")
    # A duration the form cannot read: said, and what was typed is kept.
    operator.find_element(By.ID, "silence-host").send_keys("sw-core")
    operator.find_element(By.ID, "silence-name").send_keys("link*")
    operator.find_element(By.ID, "silence-duration").clear()
    operator.find_element(By.ID, "silence-duration").send_keys("a while")
    operator.find_element(By.ID, "silence-comment").send_keys("replacing the line card")
    submit(operator, "add")
    assert operator.find_element(By.ID, "form-error").text.startswith(
        "Duration: 'a while': expected a number and a unit")
    assert operator.find_element(By.ID, "silence-host").get_attribute("value") == "sw-core"
    operator.find_element(By.ID, "silence-duration").clear()
    operator.find_element(By.ID, "silence-duration").send_keys("2h")
    submit(operator, "add")
    assert operator.find_element(By.ID, "done").text == "Silence added."

    def rows(driver) -> list[list[str]]:
        return driver.execute_script(
            "return Array.from(document.querySelectorAll('#silences tbody tr'),"
            " (tr) => Array.from(tr.cells, (c) => c.textContent.trim()));")

    ((sid, host, name, _, by, _, _, comment, action),) = rows(operator)
    assert (host, name, by, comment, action) == ("sw-core", "link*", "alice",
                                                 "replacing the line card", "Expire")
    screenshot(operator, "silences.png")
    # The viewer sees it, without form nor button; a forged expiry is refused.
    viewer.get(f"{site.base}/silences")
    assert rows(viewer) == [r[:8] for r in rows(operator)]
    assert viewer.find_elements(By.CSS_SELECTOR, "main button") == []
    assert viewer.find_elements(By.ID, "add-silence") == []
    csrf = viewer.find_element(By.CSS_SELECTOR, 'form[action="/logout"] input[name="csrf"]') \
        .get_attribute("value")
    status, body = post(site, f"/silences/{sid}/expire", {"csrf": csrf}, session_of(viewer))
    assert status == 403 and "victor is a viewer" in body
    # Expired by the operator: off the list.
    submit(operator, f"expire-{sid}")
    assert operator.find_element(By.ID, "done").text.startswith("Silence expired")
    assert rows(operator) == []


def test_the_board_tells_when_it_is_not_live(site, operator):
    operator.get(site.base + "/")
    live(operator)
    shown = len(operator.find_elements(By.CSS_SELECTOR, "tbody tr"))
    site.console.stop()
    wait_for(operator, lambda d: d.find_element(By.ID, "live").get_attribute("data-state")
             == "reconnecting", "the reconnecting state")
    assert operator.find_element(By.ID, "live").text == "reconnecting…"
    site.console.start()
    # Sessions live in the console's memory: after its restart the board says it is logged out.
    wait_for(operator, lambda d: d.find_element(By.ID, "live").get_attribute("data-state")
             == "logged-out", "the logged-out state")
    login(operator, site, "alice")
    live(operator)
    # The board is rebuilt from the correlator's tables.
    wait_for(operator, lambda d: len(d.find_elements(By.CSS_SELECTOR, "tbody tr")) == shown,
             f"the {shown} alarms again")
