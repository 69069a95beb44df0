"""The engine's own rmtree (the fast CLI path's stand-in for shutil.rmtree): deletes a whole
tree, unlinks symlinks without following them, and ignores errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from forge_runtime_linux._engine import rmtree

pytestmark = [pytest.mark.linux]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the tree to delete, holding a file and a subdirectory."""
    target = tmp_path / "outside"
    (target / "sub").mkdir(parents=True)
    (target / "sub" / "keep.txt").write_text("keep")
    return target


class TestRmtree:
    """rmtree removes what is below the path it is given, and nothing else."""

    def test_removes_nested_files_dirs_and_symlinks_but_not_their_targets(
        self, tmp_path: Path, outside: Path
    ) -> None:
        """A deep tree with files, an empty dir and symlinks to a dir, a file and nowhere goes;
        what the symlinks point at stays."""
        tree = tmp_path / "tree"
        (tree / "a" / "b" / "c").mkdir(parents=True)
        (tree / "empty").mkdir()
        (tree / "a" / "f.txt").write_text("x")
        (tree / "a" / "b" / "c" / "g.txt").write_text("y")
        (tree / "a" / "b" / "to-dir").symlink_to(outside)
        (tree / "to-file").symlink_to(outside / "sub" / "keep.txt")
        (tree / "dangling").symlink_to(tmp_path / "nowhere")
        os.mkfifo(tree / "a" / "fifo")
        rmtree(str(tree))
        assert not tree.exists()
        assert (outside / "sub" / "keep.txt").read_text() == "keep"

    def test_a_symlink_given_as_the_root_is_unlinked_not_followed(
        self, tmp_path: Path, outside: Path
    ) -> None:
        """Passed a symlink to a directory, rmtree removes the link and leaves the directory."""
        link = tmp_path / "link"
        link.symlink_to(outside)
        rmtree(str(link))
        assert not link.is_symlink()
        assert (outside / "sub" / "keep.txt").read_text() == "keep"

    def test_a_missing_path_or_a_plain_file_is_fine(self, tmp_path: Path) -> None:
        """A path that does not exist is ignored; a plain file is deleted."""
        rmtree(str(tmp_path / "missing"))
        single = tmp_path / "single.txt"
        single.write_text("x")
        rmtree(str(single))
        assert not single.exists()
