"""The plugin loader against real entry points: distributions written to a directory on
``sys.path`` with their ``entry_points.txt``, found by importlib.metadata as pip's would be."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import stevedore

from forge_core import plugins
from forge_core.abc import Runtime
from forge_core.exceptions import ConfigError, PluginError
from forge_core.runtime.process import ProcessRuntime


def make_dist(site: Path, name: str, entry_points: str, module: str | None = None,
              code: str = "") -> None:
    """Write an installed distribution ``name`` (dist-info + optional module) into ``site``."""
    info = site / f"{name.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    if module:
        (site / f"{module}.py").write_text(textwrap.dedent(code))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "site"
    path.mkdir()
    sys.path.insert(0, str(path))
    # stevedore and forge_core.plugins cache what they found per process; real installs
    # happen before start-up, these mid-process, so the caches must forget what they saw
    stevedore.ExtensionManager.ENTRY_POINT_CACHE.clear()
    plugins._loaded.clear()
    yield path
    sys.path.remove(str(path))
    for mod in [m for m in sys.modules if m.startswith("fp_")]:
        del sys.modules[mod]


GOOD = """
    import attrs
    from forge_core.abc import Availability
    from forge_core.runtime.process import ProcessRuntime

    class Good(ProcessRuntime):
        name = "good"

        @attrs.frozen
        class Config:
            depth: int = 1

        def __init__(self, config=None):
            super().__init__()
            self.config = config

    class Nope(ProcessRuntime):
        name = "nope"

        @classmethod
        def available(cls):
            return Availability.no("needs a kernel from the future")

    class NotARuntime:
        pass
"""


class TestLoading:
    def test_a_registered_plugin_loads_with_its_options_structured(self, site: Path) -> None:
        """Options become the plugin's own attrs Config."""
        make_dist(site, "fp-good", "[forge.runtime]\ngood = fp_good:Good\n", "fp_good", GOOD)
        runtime = plugins.create("runtime", "good", {"depth": 3})
        assert isinstance(runtime, Runtime)
        assert runtime.config.depth == 3

    def test_bad_options_are_a_config_error_naming_the_field(self, site: Path) -> None:
        """An unknown option is reported with the plugin's name and field."""
        make_dist(site, "fp-good", "[forge.runtime]\ngood = fp_good:Good\n", "fp_good", GOOD)
        with pytest.raises(ConfigError, match="dpeth"):
            plugins.create("runtime", "good", {"dpeth": 3})

    def test_a_plugin_is_looked_up_once_per_search_path(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Loading the same plugin again scans no distributions; a changed sys.path (where an
        install made mid-process would appear) looks again."""
        scans: list[str] = []
        real = plugins._entry_points
        monkeypatch.setattr(plugins, "_entry_points", lambda group: scans.append(group) or real(group))
        plugins._loaded.clear()
        first = plugins.load_class("runtime", "process")
        assert first is ProcessRuntime
        assert scans == ["runtime"]
        assert plugins.load_class("runtime", "process") is first
        assert scans == ["runtime"]
        monkeypatch.syspath_prepend(str(tmp_path))
        assert plugins.load_class("runtime", "process") is first
        assert scans == ["runtime", "runtime"]

    def test_a_missing_plugin_names_the_distribution_to_install(self) -> None:
        """Asking for router 'caddy' without its distribution says what to pip install."""
        with pytest.raises(PluginError, match="pip install forge-router-caddy"):
            plugins.load_class("router", "caddy")

    def test_an_unknown_name_lists_what_is_installed(self) -> None:
        """A name nobody ships lists the installed names of that group."""
        with pytest.raises(PluginError, match=r"installed: .*thread"):
            plugins.load_class("executor", "warp")

    def test_a_name_claimed_by_two_distributions_is_refused(self, site: Path) -> None:
        """Two distributions registering runtime 'twin' is an error naming both."""
        make_dist(site, "fp-one", "[forge.runtime]\ntwin = fp_good:Good\n", "fp_good", GOOD)
        make_dist(site, "fp-two", "[forge.runtime]\ntwin = fp_good:Nope\n")
        with pytest.raises(PluginError, match="fp-one, fp-two"):
            plugins.load_class("runtime", "twin")

    def test_a_class_of_the_wrong_interface_is_refused(self, site: Path) -> None:
        """A forge.runtime entry point that is not a Runtime is rejected by name."""
        make_dist(site, "fp-odd", "[forge.runtime]\nodd = fp_good:NotARuntime\n", "fp_good", GOOD)
        with pytest.raises(PluginError, match="is not a Runtime"):
            plugins.load_class("runtime", "odd")

    def test_an_unusable_plugin_is_refused_with_its_reason(self, site: Path) -> None:
        """available() saying no stops create() with that reason."""
        make_dist(site, "fp-nope", "[forge.runtime]\nnope = fp_good:Nope\n", "fp_good", GOOD)
        with pytest.raises(PluginError, match="kernel from the future"):
            plugins.create("runtime", "nope")

    def test_a_test_registration_loads_without_installing(self) -> None:
        """plugins.register makes a class loadable for the duration of a block."""
        with plugins.register("runtime", "mine", ProcessRuntime):
            assert plugins.load_class("runtime", "mine") is ProcessRuntime
        with pytest.raises(PluginError):
            plugins.load_class("runtime", "mine")


class TestListing:
    def test_a_broken_plugin_is_listed_with_its_error_and_breaks_nothing(self, site: Path) -> None:
        """An import error shows on its own row; the core's plugins still list as usable."""
        make_dist(site, "fp-broken", "[forge.runtime]\nbroken = fp_broken:X\n", "fp_broken",
                  "raise ImportError('libfoo.so.1 not found')\n")
        make_dist(site, "fp-nope", "[forge.runtime]\nnope = fp_good:Nope\n", "fp_good", GOOD)
        infos = {(i.group, i.name): i for i in plugins.list_plugins()}
        broken = infos[("runtime", "broken")]
        assert not broken.usable
        assert "libfoo.so.1" in broken.error
        assert broken.distribution == "fp-broken"
        assert infos[("runtime", "nope")].reason == "needs a kernel from the future"
        assert infos[("runtime", "process")].usable
        assert infos[("runtime", "process")].distribution == "forge-core"

