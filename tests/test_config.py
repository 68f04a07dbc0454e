"""Configuration documents (app/config.py): read once, reloaded safely, and the snapshot a respawned worker
starts from."""

from __future__ import annotations

import json
import os

import pytest

from app.config import SNAPSHOT_ENV, ConfigError, ReloadingDocument, Source


def load(data: bytes, label: str) -> dict:
    """A document whose `a` must be an integer: `{"a": "broken"}` is refused."""
    document = json.loads(data)
    if not isinstance(document.get("a"), int):
        raise ConfigError(label, [("$.a", "expected an integer")])
    return document


def test_a_worker_starting_from_the_snapshot_reads_the_file_at_its_first_poll_even_when_it_is_gone(
        tmp_path, monkeypatch):
    """What a respawned worker does (app.config): the snapshot when the file reads otherwise, then the file."""
    monkeypatch.setenv(SNAPSHOT_ENV, str(tmp_path))
    path = tmp_path / "profiles.json"
    path.write_text('{"a": 1}')

    first = ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(path)), load, {})
    assert (tmp_path / "ISSUER_PROFILES_JSON.json").read_bytes().endswith(b'\n{"a": 1}')
    path.write_text('{"a": "broken"}')
    assert first.reload() is False and first.value == {"a": 1}
    respawned = ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(path)), load, {})
    assert respawned.value == {"a": 1} and respawned.changed_on_disk()
    assert respawned.reload() is False and "$.a: expected an integer" in respawned.last_error
    path.unlink()
    again = ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(path)), load, {})
    assert again.value == {"a": 1} and again.changed_on_disk()
    assert again.reload() is False and "cannot read the file" in again.last_error


async def test_a_respawned_worker_takes_up_an_edit_its_siblings_were_not_told_of_when_they_do(tmp_path, monkeypatch):
    """Found by a review: a worker respawned from the snapshot read the file at once, so an edit not yet signalled
    (SIGHUP) or polled for was served by it alone, for as long as the others' poll interval. It now starts where
    its siblings stand, and its polls see the change when theirs do."""
    import asyncio

    from app.config import watch

    monkeypatch.setenv(SNAPSHOT_ENV, str(tmp_path))
    path = tmp_path / "profiles.json"
    path.write_text('{"a": 1}')
    sibling = ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(path)), load, {})
    path.write_text('{"a": 2}')  # edited; nobody told yet
    respawned = ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(path)), load, {})
    assert respawned.value == sibling.value == {"a": 1}
    task = asyncio.ensure_future(watch([respawned], 3600))  # polling rarely: SIGHUP is what tells the workers
    await asyncio.sleep(0.05)
    task.cancel()
    assert respawned.value == {"a": 1} and respawned.last_error is None
    assert respawned.changed_on_disk() and sibling.changed_on_disk()  # the same change, for both, at their polls
    assert respawned.reload() and sibling.reload() and respawned.value == sibling.value == {"a": 2}


def test_a_worker_that_missed_a_version_its_siblings_accepted_takes_it_when_the_file_breaks(tmp_path, monkeypatch):
    """Found by a review: each worker polls on its own, and one that missed B (A, B for a moment, then a broken
    C) went on serving A while the others served B, for as long as the file stayed broken."""
    monkeypatch.setenv(SNAPSHOT_ENV, str(tmp_path))
    path = tmp_path / "profiles.json"
    path.write_text('{"a": 1}')

    changes: list[object] = []
    quick = ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(path)), load, {})
    slow = ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(path)), load, {},
                             on_change=lambda old, new: changes.append(new))
    path.write_text('{"a": 2}')
    assert quick.reload() is True
    path.write_text('{"a": "broken"}')
    assert slow.reload() is False and "$.a" in slow.last_error  # refused, and said so in /readyz
    assert slow.value == {"a": 2} and changes == [{"a": 2}]
    assert quick.reload() is False and quick.value == {"a": 2}
    path.write_text('{"a": 3}')
    assert slow.reload() is True and quick.reload() is True and slow.value == quick.value == {"a": 3}
    assert slow.last_error is None


def test_a_version_reverted_before_every_worker_saw_it_is_not_followed_when_the_file_breaks(tmp_path, monkeypatch):
    """Found by a review: B lived on disk for less than a poll, so only one worker took it; the file went back to
    A, then broke, and the other worker followed the snapshot to the B the operator had reverted."""
    monkeypatch.setenv(SNAPSHOT_ENV, str(tmp_path))
    path = tmp_path / "profiles.json"
    path.write_text('{"a": 1}')

    quick = ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(path)), load, {})
    slow = ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(path)), load, {})
    path.write_text('{"a": 2}')
    assert quick.reload() is True
    path.write_text('{"a": 1}')  # reverted before the slow worker looked
    assert slow.reload() is False and slow.value == {"a": 1}
    path.write_text('{"a": "broken"}')
    assert slow.reload() is False and slow.value == {"a": 1}
    assert quick.reload() is False and quick.value == {"a": 1}  # the quick worker follows the revert too


def test_a_file_replaced_keeping_its_modification_time_is_seen_as_changed(tmp_path):
    """`cp -p` and rsync keep the modification time: a secret rotated that way must not be missed by the poll
    (and a worker respawned later would read it while its siblings did not)."""
    path = tmp_path / "profiles.json"
    path.write_text('{"secret": "old"}')
    document = ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(path)), lambda data, _: json.loads(data), {})
    before = os.stat(path)
    assert not document.changed_on_disk()
    path.write_text('{"secret": "new"}')
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_mtime_ns == before.st_mtime_ns
    assert document.changed_on_disk() and document.reload() and document.value == {"secret": "new"}


@pytest.mark.parametrize("edit", ["moved-over-by-a-new-file", "rewritten-to-another-size"])
def test_a_file_changed_within_one_tick_of_a_coarse_clock_is_seen_as_changed(tmp_path, monkeypatch, edit):
    """A file system with coarse times (a second, two on FAT) can leave an edit's times as they were: the inode
    (`mv` of a new file) or the size still tells the change."""
    import types

    from app import config

    class CoarseClock:  # `os` as app.config sees it, on a file system whose times did not move
        def __getattr__(self, name: str) -> object:
            return getattr(os, name)

        @staticmethod
        def stat(name: str) -> types.SimpleNamespace:
            return types.SimpleNamespace(st_mtime_ns=0, st_ctime_ns=0, st_ino=os.stat(name).st_ino,
                                         st_size=os.stat(name).st_size)

    monkeypatch.setattr(config, "os", CoarseClock())
    path = tmp_path / "profiles.json"
    path.write_text('{"a": 1}')
    document = ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(path)), load, {})
    if edit == "moved-over-by-a-new-file":
        (tmp_path / "new.json").write_text('{"a": 2}')  # the same size
        os.replace(tmp_path / "new.json", path)
    else:
        path.write_text('{"a": 22}')  # the same inode
    assert document.changed_on_disk() and document.reload() and document.value["a"] in (2, 22)


def test_a_file_touched_but_not_changed_is_not_reloaded(tmp_path):
    """chmod, touch or a hard link change the file's stamp, not its content: nothing is rebuilt or logged."""
    path = tmp_path / "profiles.json"
    path.write_text('{"a": 1}')
    changes: list[object] = []
    document = ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(path)), lambda data, _: json.loads(data), {},
                                 on_change=lambda old, new: changes.append(new))
    os.chmod(path, 0o640)
    os.link(path, tmp_path / "linked.json")
    assert document.changed_on_disk()
    assert document.reload() is False and changes == [] and not document.changed_on_disk()
    path.write_text('{"a": 2}')
    assert document.reload() is True and changes == [{"a": 2}]


@pytest.fixture
def snapshots(tmp_path, monkeypatch):
    """The directory documents are snapshotted in, as the service's main process sets it for its workers."""
    directory = tmp_path / "snapshots"
    directory.mkdir()
    monkeypatch.setenv(SNAPSHOT_ENV, str(directory))
    return directory


def test_a_snapshot_that_cannot_be_written_is_removed_not_left_older(tmp_path, snapshots):
    """A respawned worker then reads the file itself, rather than starting on a document its siblings left."""
    path = tmp_path / "profiles.json"
    path.write_text('{"v": 1}')
    document = ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(path)), lambda data, _: json.loads(data), {})
    assert (snapshots / "ISSUER_PROFILES_JSON.json").exists()
    (snapshots / f"ISSUER_PROFILES_JSON.json.{os.getpid()}").mkdir()  # the next write fails (as on a full disk)
    path.write_text('{"v": 2}')
    assert document.reload() is True and document.value == {"v": 2}
    assert not (snapshots / "ISSUER_PROFILES_JSON.json").exists()


def test_a_path_that_is_no_regular_file_or_too_large_is_refused_without_waiting_or_reading_it_all(tmp_path):
    """Found by a review: a FIFO at the path hung startup (and, on a reload, the worker's event loop for good);
    /dev/zero was read until memory ran out."""
    import pytest

    from app.config import MAX_CONFIG_BYTES

    fifo = tmp_path / "profiles.json"
    os.mkfifo(fifo)
    for path, says in ((str(fifo), "not a regular file"), ("/dev/zero", "not a regular file"),
                       (str(tmp_path), "not a regular file")):
        with pytest.raises(ConfigError) as info:
            Source("ISSUER_PROFILES_JSON", path).read()
        assert f"$: cannot read the file: {says}" in str(info.value), path
    large = tmp_path / "large.json"
    with open(large, "wb") as handle:
        handle.truncate(MAX_CONFIG_BYTES + 1)
    with pytest.raises(ConfigError) as info:
        Source("ISSUER_PROFILES_JSON", str(large)).read()
    assert f"the file is larger than {MAX_CONFIG_BYTES >> 20} MiB" in str(info.value)
    fifo.unlink()
    fifo.write_text('{"a": 1}')
    document = ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(fifo)), load, {})
    fifo.unlink()
    os.mkfifo(fifo)
    assert document.reload() is False and "not a regular file" in document.last_error and document.value == {"a": 1}


async def test_a_document_another_reloads_in_the_same_poll_is_read_once_and_its_refusal_logged_once(tmp_path):
    """The profiles' reload reads a changed authorizers file itself (app.server.profiles_changed); the poll then
    read it again, and each worker logged one refusal twice (found by a review)."""
    import asyncio

    import structlog.testing

    from app.config import watch

    first_path, second_path = tmp_path / "profiles.json", tmp_path / "authorizers.json"
    first_path.write_text('{"a": 1}')
    second_path.write_text('{"a": 1}')
    second = ReloadingDocument(Source("AUTHORIZERS_JSON", str(second_path)), load, {})
    first = ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(first_path)), load, {},
                              on_change=lambda old, new: second.reload())
    for path, text in ((first_path, '{"a": 2}'), (second_path, '{"a": "broken"}')):
        path.write_text(text)
        os.utime(path, (os.path.getmtime(path) + 5, os.path.getmtime(path) + 5))
    with structlog.testing.capture_logs() as logs:
        task = asyncio.ensure_future(watch([first, second], 0.01))
        await asyncio.sleep(0.2)  # several polls: the refused file is not read again while nothing changes
        task.cancel()
    assert first.value == {"a": 2} and "$.a: expected an integer" in second.last_error
    assert [entry["source"] for entry in logs if entry["event"] == "config_reload_failed"] == ["AUTHORIZERS_JSON"]
    assert second.reads == 1


async def test_a_file_a_sighup_refused_is_not_read_again_by_the_next_poll(tmp_path, monkeypatch):
    """Found by a review: the SIGHUP's reload left no mark of the stamps it refused the file at, so the next poll
    read the unchanged file again and logged its refusal twice."""
    import asyncio

    from app.config import _reload_pass, _stamps, watch

    monkeypatch.setenv(SNAPSHOT_ENV, str(tmp_path))
    path = tmp_path / "profiles.json"
    path.write_text('{"a": 1}')
    document = ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(path)), load, {})
    path.write_text('{"a": "broken"}')
    _reload_pass([document], _stamps([document]), every=True)  # what the SIGHUP handler does
    assert document.reads == 1 and "$.a" in (document.last_error or "")
    task = asyncio.ensure_future(watch([document], 0.01))
    await asyncio.sleep(0.1)
    assert document.reads == 1  # the polls saw nothing new
    path.write_text('{"a": 2}')
    for _ in range(100):
        await asyncio.sleep(0.01)
        if document.value == {"a": 2}:
            break
    task.cancel()
    assert document.value == {"a": 2} and document.reads == 2 and document.last_error is None


async def test_a_sighup_after_a_poll_refused_the_file_does_not_read_it_again(tmp_path, monkeypatch):
    """The other order: the poll saw the edit first, refused it and logged why; the SIGHUP sent for the same edit
    finds nothing new, where it logged the refusal a second time."""
    from app.config import _reload_pass, _stamps

    monkeypatch.setenv(SNAPSHOT_ENV, str(tmp_path))
    path = tmp_path / "profiles.json"
    path.write_text('{"a": 1}')
    document = ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(path)), load, {})
    path.write_text('{"a": "broken"}')
    _reload_pass([document], _stamps([document]), every=False)  # what a poll that saw the change does
    _reload_pass([document], _stamps([document]), every=True)  # the SIGHUP
    assert document.reads == 1 and document.last_error is not None
    path.write_text('{"a": 3}')  # fixed: the next SIGHUP takes it
    _reload_pass([document], _stamps([document]), every=True)
    assert document.value == {"a": 3} and document.reads == 2


# Found by mutation testing: each of these could change unseen

def test_a_member_name_repeated_inside_an_array_is_refused_not_read_as_its_last_value():
    """`{"effect": "deny", "effect": "allow"}` in a rule: the last one won, and the deny became an allow."""
    from app.server import create_app
    from app.settings import Settings
    from tests.conftest import rs256_policy

    document = ('{"api": {"policy": ' + json.dumps(rs256_policy()) +
                ', "rules": [{"effect": "deny", "effect": "allow"}]}}')
    with pytest.raises(ConfigError, match=r"\$\.api\.rules\[0\]\.effect: this member name appears more than once"):
        create_app(Settings(authorizers_json=document))


@pytest.mark.parametrize("value", [
    "/run/secrets/Zm9vYmFyQmF6cXV4MTIzNDU2Nzg5",
    "/run/secrets/Zm9vYmFyQmF6cXV4MTIz",  # 20 characters: the shortest run hidden
    "/srv/" + "/".join(["a" * 200] * 5) + "/profiles12.json",  # 1,025 characters: longer than a path shown
], ids=["token", "token-of-20-characters", "longer-than-a-path"])
def test_a_value_that_looks_like_a_token_is_not_shown_as_the_documents_label(value):
    source = Source("ISSUER_PROFILES_JSON", value)
    assert source.label == "ISSUER_PROFILES_JSON (the value, not shown: it does not look like a file path)"


def test_the_snapshot_holding_the_documents_secrets_is_readable_by_the_services_user_alone(tmp_path, snapshots):
    import stat

    path = tmp_path / "profiles.json"
    path.write_text('{"a": 1, "secret": "s3cr3t"}')
    path.chmod(0o644)
    ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(path)), load, {})
    assert stat.S_IMODE(os.stat(snapshots / "ISSUER_PROFILES_JSON.json").st_mode) == 0o600


def test_an_inline_document_is_never_written_to_the_snapshot_directory(tmp_path, monkeypatch):
    """A snapshot serves a respawned worker whose file broke: inline JSON cannot break, and may hold secrets."""
    monkeypatch.setenv(SNAPSHOT_ENV, str(tmp_path))
    document = ReloadingDocument(Source("ISSUER_PROFILES_JSON", '{"a": 1, "secret": "s3cr3t"}'), load, {})
    assert document.value["a"] == 1 and list(tmp_path.iterdir()) == []


def test_a_file_reverted_to_the_served_bytes_after_a_refusal_is_served_again_without_the_refusal(tmp_path):
    path = tmp_path / "profiles.json"
    path.write_text('{"a": 1}')
    document = ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(path)), load, {})
    path.write_text('{"a": "broken"}')
    assert document.reload() is False and document.last_error is not None
    path.write_text('{"a": 1}')
    assert document.reload() is True and document.last_error is None and document.value == {"a": 1}


def test_a_loader_that_fails_on_a_reload_keeps_the_served_document(tmp_path):
    path = tmp_path / "profiles.json"
    path.write_text('{"a": 1}')

    def fragile(data: bytes, label: str) -> dict:
        document = load(data, label)
        return document if document["a"] == 1 else document["missing"]  # a bug: KeyError

    document = ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(path)), fragile, {})
    path.write_text('{"a": 2}')
    assert document.reload() is False and document.value == {"a": 1}
    assert "could not be loaded (KeyError)" in document.last_error


def test_a_document_refused_again_in_another_version_is_logged_again(tmp_path):
    import structlog

    path = tmp_path / "profiles.json"
    path.write_text('{"a": 1}')
    document = ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(path)), load, {})
    with structlog.testing.capture_logs() as logs:
        path.write_text('{"a": "broken"}')
        document.reload()
        document.reload()  # the same bytes: told once
        path.write_text('{"a": "broken", "b": 2}')  # another version, the same problem: told again
        document.reload()
    assert [line["event"] for line in logs].count("config_reload_failed") == 2


def test_the_same_bytes_refused_for_another_reason_are_logged_again(tmp_path):
    """The profiles are checked against the authorizers as they stand: the same file may be refused again because
    another authorizer now names a profile it drops, which the operator needs to read."""
    import structlog

    path = tmp_path / "profiles.json"
    path.write_text('{"a": 1}')
    named = ["az1"]
    document = ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(path)), load, {},
                                 agrees=lambda new: [("$", f"authorizer {name} names it") for name in named])
    path.write_text('{"a": 2}')
    with structlog.testing.capture_logs() as logs:
        document.reload()
        named.append("az2")
        document.reload()
    told = [line["problems"] for line in logs if line["event"] == "config_reload_failed"]
    assert told == [[f"ISSUER_PROFILES_JSON ({path}): $: authorizer {name} names it" for name in named[:count]]
                    for count in (1, 2)]


def test_a_file_that_cannot_be_read_is_logged_at_each_read(tmp_path):
    """No bytes to tell one refusal from the next: a file missing, or unreadable for a moment while replaced, is
    told each time it is read."""
    import structlog

    path = tmp_path / "profiles.json"
    path.write_text('{"a": 1}')
    document = ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(path)), load, {})
    path.unlink()
    with structlog.testing.capture_logs() as logs:
        assert document.reload() is False and document.reload() is False
    assert [line["event"] for line in logs].count("config_reload_failed") == 2 and document.value == {"a": 1}


def test_a_config_file_of_exactly_16_mib_is_read(tmp_path):
    path = tmp_path / "profiles.json"
    head, tail = b'{"a": 1, "pad": "', b'"}'
    path.write_bytes(head + b"x" * ((16 << 20) - len(head) - len(tail)) + tail)
    assert os.path.getsize(path) == 16 << 20
    assert ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(path)), load, {}).value["a"] == 1


def test_a_config_file_over_16_mib_is_refused(tmp_path):
    path = tmp_path / "profiles.json"
    path.write_bytes(b'{"a": 1, "pad": "' + b"x" * (16 << 20) + b'"}')
    with pytest.raises(ConfigError, match="larger than 16 MiB"):
        ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(path)), load, {})


def test_json_paths_bracket_dotted_names_and_hide_only_names_longer_than_an_id():
    from app.config import MAX_SHOWN_NAME, json_path

    assert json_path("acme", "required_custom_claims", "org.id") == '$.acme.required_custom_claims["org.id"]'
    assert json_path("a" * MAX_SHOWN_NAME, "issuer") == f"$.{'a' * MAX_SHOWN_NAME}.issuer"
    assert json_path("a" * (MAX_SHOWN_NAME + 1)) == f"$[<a name of {MAX_SHOWN_NAME + 1} characters>]"


async def test_a_sighup_reads_a_file_again_even_when_its_stamp_did_not_change(tmp_path, monkeypatch):
    """A coarse timestamp or a network file system's attribute cache can leave an edit's stamp as it was: the
    poll misses it, and SIGHUP, the operator's "read it now", reads every file whatever its stamp."""
    import asyncio
    import signal

    from app.config import install_sighup

    monkeypatch.setattr(Source, "stamp", lambda self: ("as it was",))
    path = tmp_path / "profiles.json"
    path.write_text('{"a": 1}')
    document = ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(path)), load, {})
    path.write_text('{"a": 2}')
    assert not document.changed_on_disk()
    loop = asyncio.get_running_loop()
    install_sighup([document])
    try:
        assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, signal.SIG_IGN)  # else the signal ends pytest
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if document.value == {"a": 2}:
                break
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
    assert document.value == {"a": 2}


def test_a_sighup_reads_a_file_taken_up_by_the_other_documents_change_even_at_the_stamps_it_was_refused_at(
        tmp_path, monkeypatch):
    """The profiles refused for naming what the authorizers lack are taken up when the authorizers' change reads
    them again, later in the same pass: refused no more, they are read by the next SIGHUP like any other document
    (an edit on a coarse clock leaves the stamps as they were)."""
    from app.config import _reload_pass, _stamps

    monkeypatch.setattr(Source, "stamp", lambda self: ("as it was",))
    profiles_path, authorizers_path = tmp_path / "profiles.json", tmp_path / "authorizers.json"
    profiles_path.write_text('{"a": 1}')
    authorizers_path.write_text('{"a": 1}')
    profiles = ReloadingDocument(
        Source("ISSUER_PROFILES_JSON", str(profiles_path)), load, {},
        agrees=lambda new: [] if new["a"] != 2 or authorizers.value["a"] == 2 else [("$.a", "not yet")])
    authorizers = ReloadingDocument(Source("AUTHORIZERS_JSON", str(authorizers_path)), load, {},
                                    on_change=lambda old, new: profiles.reload())
    documents = [profiles, authorizers]
    profiles_path.write_text('{"a": 2}')
    _reload_pass(documents, _stamps(documents), every=True)
    assert profiles.value == {"a": 1} and profiles.last_error is not None
    authorizers_path.write_text('{"a": 2}')
    _reload_pass(documents, _stamps(documents), every=True)
    assert profiles.value == authorizers.value == {"a": 2} and profiles.last_error is None
    profiles_path.write_text('{"a": 3}')
    _reload_pass(documents, _stamps(documents), every=True)
    assert profiles.value == {"a": 3}


def test_a_file_that_grew_past_16_mib_after_its_size_was_read_is_refused_for_its_size(tmp_path, monkeypatch):
    """The size a file reports can be out of date by the time it is read (a file being written, or one that
    reports 0 as /proc does): what was read is measured too."""
    from app import config

    path = tmp_path / "profiles.json"
    path.write_bytes(b'{"a": 1, "pad": "' + b"x" * (16 << 20) + b'"}')
    real = os.fstat

    def reporting_nothing(descriptor: int) -> os.stat_result:
        status = list(real(descriptor))
        status[6] = 0  # st_size
        return os.stat_result(status)

    monkeypatch.setattr(config.os, "fstat", reporting_nothing)
    with pytest.raises(ConfigError, match="larger than 16 MiB"):
        Source("ISSUER_PROFILES_JSON", str(path)).read()


def test_when_the_file_breaks_a_worker_takes_its_siblings_version_only_if_new_to_it_and_agreed(tmp_path, monkeypatch):
    """The snapshot is followed only when it is not what the worker serves (else a rebuild for nothing: keys
    forgotten and fetched, authorizers reloaded), and only when the other documents agree with it, as a reload's
    own version must (a profile an authorizer names may not go)."""
    import structlog

    monkeypatch.setenv(SNAPSHOT_ENV, str(tmp_path))
    path = tmp_path / "profiles.json"
    path.write_text('{"a": 1}')
    changes: list[object] = []
    quick = ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(path)), load, {},
                              on_change=lambda old, new: changes.append(new))
    refusing = ReloadingDocument(Source("ISSUER_PROFILES_JSON", str(path)), load, {},
                                 agrees=lambda new: [("$.a", "an authorizer names it")] if new == {"a": 2} else [])
    path.write_text('{"a": 2}')
    assert quick.reload() is True and changes == [{"a": 2}]
    path.write_text('{"a": "broken"}')
    with structlog.testing.capture_logs() as logs:
        assert quick.reload() is False and quick.value == {"a": 2}
    assert changes == [{"a": 2}] and "config_reloaded" not in [line["event"] for line in logs]
    assert refusing.reload() is False and refusing.value == {"a": 1}
