"""fer.run.atomic: a file written through atomic_write is the old one or the whole new one, never
part of one, and no temporary file is left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from fer.run.atomic import atomic_write


def test_the_target_is_replaced_whole_only_when_the_block_ends(tmp_path: Path) -> None:
    target = tmp_path / "new" / "folder" / "metrics.json"
    with atomic_write(target) as handle:
        handle.write('{"acc": 0.5}\n')
    assert target.read_text() == '{"acc": 0.5}\n'
    with atomic_write(target, "wb") as handle:
        handle.write(b'{"acc": ')
        assert target.read_text() == '{"acc": 0.5}\n'  # a reader meanwhile sees the old file
        handle.write(b"0.6}\n")
    assert target.read_text() == '{"acc": 0.6}\n'
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]


def test_an_exception_inside_the_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"the good checkpoint")
    with pytest.raises(OSError, match="No space left"):
        with atomic_write(target, "wb") as handle:
            handle.write(b"half a checkp")
            raise OSError("No space left on device")
    assert target.read_bytes() == b"the good checkpoint"
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(tmp_path / "never.json") as handle:
            handle.write("{")
            raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_text_options_reach_open_and_only_whole_file_modes_are_taken(tmp_path: Path) -> None:
    target = tmp_path / "metrics.csv"
    with atomic_write(target, newline="") as handle:
        handle.write("step,loss\r\n0,1.5\r\n")
    assert target.read_bytes() == b"step,loss\r\n0,1.5\r\n"
    for mode in ("a", "r+", "w+b"):
        with pytest.raises(ValueError, match="mode 'w' or 'wb'"):
            with atomic_write(target, mode):
                pass
    assert target.read_bytes() == b"step,loss\r\n0,1.5\r\n"
