"""The registries are the single source: YAML, docs, report styles, the claim and sweep presets follow
them, and a new method is one Python file plus one YAML (proven with a throw-away method)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import methods
from bench.catalog import MARKDOWN_BEGIN, MARKDOWN_END, methods_markdown
from bench.record import read_record, validate_record
from bench.report import comparison
from bench.report.style import PALETTE, method_color, order_methods
from tests.conftest import CONF, ROOT, compose, group_choices


def method_yaml(name: str) -> dict:
    return yaml.safe_load((CONF / "method" / f"{name}.yaml").read_text())


# ---- YAML defaults == dataclass defaults ----------------------------------------------------------
@pytest.mark.parametrize("method", methods.method_names())
def test_method_yaml_repeats_the_dataclass_defaults(method: str) -> None:
    """Every field, with the code's default: a changed default in either place fails here."""
    assert methods.yaml_drift(methods.get_method(method), method_yaml(method)) == []


def test_yaml_drift_names_each_kind_of_difference() -> None:
    """The control: the check above can fail, and says which key differs and how."""
    cls = methods.get_method("prefix_tuning")
    values = method_yaml("prefix_tuning")
    values["lr"] = 0.01
    del values["prefix_dropout"]
    values["prefix_dropuot"] = 0.2
    drift = methods.yaml_drift(cls, values)
    assert drift == [
        "prefix_dropout: missing (default 0.1)",
        "prefix_dropuot: not a field of PrefixTuningConfig",
        "lr: 0.01 != dataclass default 0.002",
    ]


# ---- docs ------------------------------------------------------------------------------------------
def test_methods_doc_table_is_the_generated_one() -> None:
    """docs/METHODS.md's declarations and default LRs are `python -m bench.catalog --methods-markdown`."""
    page = (ROOT / "docs" / "METHODS.md").read_text()
    assert MARKDOWN_BEGIN in page and MARKDOWN_END in page
    table = page.split(MARKDOWN_BEGIN, 1)[1].split(MARKDOWN_END, 1)[0].strip()
    assert table == methods_markdown()
    for name in methods.method_names():  # the generated table really carries the code's values
        line = next(row for row in table.splitlines() if row.startswith(f"| `{name}`"))
        assert line.endswith(f"| {methods.get_method(name).lr:g} |")


def yaml_text(value: object) -> str:
    """A default as the docs and YAML spell it."""
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def test_methods_doc_field_defaults_are_the_dataclass_defaults() -> None:
    """The 'Config fields' table of docs/METHODS.md: each field's default cell is every declaring method's default."""
    page = (ROOT / "docs" / "METHODS.md").read_text()
    rows = page.split("### Config fields", 1)[1].split("\n\n", 2)[1].splitlines()[2:]
    checked = set()
    for row in rows:
        fields_cell, _, default_cell = [cell.strip() for cell in row.strip("|").split("|")][:3]
        if default_cell == "see table":  # lr: the generated methods table, checked above
            continue
        names, values = re.findall(r"`(\w+)`", fields_cell), [v.strip(" `") for v in default_cell.split(",")]
        assert len(names) == len(values), row
        for name, value in zip(names, values):
            defaults = {
                yaml_text(methods.field_defaults(cls)[name])
                for cls in methods.METHODS.values()
                if name in methods.field_defaults(cls)
            }
            assert defaults == {value}, f"docs/METHODS.md says {name} = {value}; the code: {defaults}"
            checked.add(name)
    assert {"num_virtual_tokens", "prefix_hidden_size", "r"} <= checked  # the table was really read


# ---- report style and the comparison's claim ---------------------------------------------------------
def test_report_order_and_colours_come_from_the_registry() -> None:
    names = methods.method_names()
    assert order_methods(reversed(names)) == names
    assert [method_color(m) for m in names] == list(PALETTE[: len(names)])  # one distinct colour each
    assert order_methods(["zz_unregistered", names[0]]) == [names[0], "zz_unregistered"]
    assert method_color("zz_unregistered") == method_color("zz_unregistered")  # stable, not registered
    assert method_color("zz_unregistered") not in PALETTE[: len(names)]


def test_claim_names_only_registered_methods() -> None:
    assert comparison.unregistered_claim_methods() == []
    assert comparison.unregistered_claim_methods(["prompt_tuning", "prefix_tuning", "head_only"]) == [
        "full_finetune",
        "p_tuning_v2",
    ]


# ---- sweep presets ------------------------------------------------------------------------------------
@pytest.mark.parametrize("sweep", group_choices("sweep"))
def test_a_preset_of_every_method_says_so_instead_of_listing_them(sweep: str) -> None:
    raw = yaml.safe_load((CONF / "sweep" / f"{sweep}.yaml").read_text())
    if "hydra" not in raw:  # a preset on top of another (its defaults list) inherits that one's methods
        return test_a_preset_of_every_method_says_so_instead_of_listing_them(raw["defaults"][0])
    raw = raw["hydra"]["sweeper"]["params"]["method"]
    if raw == "${registry:methods}":
        params = compose([f"sweep={sweep}"]).hydra.sweeper.params
        assert str(params.method).split(",") == methods.method_names()
    else:  # a deliberate subset; listing all of them would miss the next method
        assert set(raw.split(",")) < set(methods.method_names()), f"sweep {sweep}: use ${{registry:methods}}"


@pytest.mark.parametrize("sweep", group_choices("sweep"))
def test_sweep_presets_name_only_registered_methods(sweep: str) -> None:
    params = compose([f"sweep={sweep}"]).hydra.sweeper.params
    assert set(str(params.method).split(",")) <= set(methods.method_names())


# ---- a new method is one Python file plus one YAML ----------------------------------------------------
TOY_METHOD = '''
"""A throw-away method for tests/test_registry.py: two virtual input tokens."""
from dataclasses import dataclass

from methods.registry import register
from methods.virtual import SoftPromptConfig


@register
@dataclass
class ToyShortPromptConfig(SoftPromptConfig):
    """Prompt tuning with two virtual tokens."""

    name = "toy_short_prompt"
    input_tokens = True
    description = "throw-away test method: two virtual tokens"
    lr: float = 1e-2
    num_virtual_tokens: int = 2
'''
TOY_YAML = "name: toy_short_prompt\nlr: 0.01\nnum_virtual_tokens: 2\ninit: random\ninit_text: null\n"


@pytest.fixture
def toy_plugin(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """(environment naming the plugin, extra conf dir) for a method kept outside the repository."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "toy_short_prompt.py").write_text(TOY_METHOD)
    (tmp_path / "conf" / "method").mkdir(parents=True)
    (tmp_path / "conf" / "method" / "toy_short_prompt.yaml").write_text(TOY_YAML)
    path = os.pathsep.join(filter(None, [str(tmp_path / "plugins"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, methods.PLUGINS_ENV: "toy_short_prompt", "PYTHONUNBUFFERED": "1"}
    return env, tmp_path / "conf"


def python(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_a_plugin_method_runs_and_appears_in_catalog_report_and_sweeps(toy_plugin, tmp_path: Path) -> None:
    env, conf = toy_plugin
    runs = tmp_path / "runs"
    python(
        [
            "-m",
            "bench",
            "method=toy_short_prompt",
            "model=tiny_bert",
            "task=synth_cls",
            "trainer=smoke",
            f"runs_root={runs}",
            "sweep_name=plugin",
            f"hydra.searchpath=[file://{conf}]",
        ],
        env,
    )
    record = read_record(runs / "plugin/toy_short_prompt/tiny_bert/synth_cls/trainer=smoke/seed=0/result.json")
    assert validate_record(record) == [] and record["status"] == "ok", record["error"]
    assert record["provenance"]["config"]["method"]["num_virtual_tokens"] == 2
    assert record["params"]["trainable"] - record["params"]["head"] == 2 * 32  # N·d on tiny_bert (d = 32)

    report = python(
        ["-m", "bench.report", str(runs / "plugin"), "--out", str(tmp_path / "report"), "--no-figures"], env
    ).stdout
    assert "| toy_short_prompt |" in report
    # one more process (each start imports torch): the catalog CLI, the YAML check, the every-method
    # sweep value, the figure colour and the speed benchmark's contenders, as seen with the plugin loaded
    script = f"""
import json, runpy, yaml
import bench, methods
from bench.report.style import PALETTE, method_color
runpy.run_module("bench.catalog", run_name="__main__")
values = yaml.safe_load(open({str(conf / "method" / "toy_short_prompt.yaml")!r}))
facts = {{"drift": methods.yaml_drift(methods.get_method("toy_short_prompt"), values),
          "sweep": bench.registered("methods").split(","), "colour": method_color("toy_short_prompt") == PALETTE[6]}}
try:
    from bench.speed.config import soft_methods, step_methods
    facts["speed"] = [list(step_methods()), list(soft_methods())]
except ImportError:  # the speed package predates the registry: nothing to check there
    facts["speed"] = None
print(json.dumps(facts))
"""
    *catalog, facts = python(["-c", script], env).stdout.strip().splitlines()
    assert any(line.startswith("toy_short_prompt ") and "throw-away test method" in line for line in catalog)
    facts = json.loads(facts)
    assert facts["drift"] == [] and facts["sweep"][-1] == "toy_short_prompt" and facts["colour"]
    if facts["speed"] is not None:
        assert all("toy_short_prompt" in contenders for contenders in facts["speed"])


def test_a_file_dropped_into_methods_registers_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Discovery imports every module of the package's folders (here a second, temporary one)."""
    (tmp_path / "toy_dropped.py").write_text(TOY_METHOD.replace("toy_short_prompt", "toy_dropped"))
    monkeypatch.setattr(methods, "__path__", [*methods.__path__, str(tmp_path)])
    saved = dict(methods.METHODS)
    try:
        methods._import_method_modules()
        assert methods.method_names()[-1] == "toy_dropped"
        assert methods.method_names()[: len(saved)] == list(saved)  # the built-ins keep their order
    finally:
        methods.METHODS.clear()
        methods.METHODS.update(saved)
        sys.modules.pop("methods.toy_dropped", None)


def test_a_plugin_that_cannot_be_imported_fails_in_one_line() -> None:
    with pytest.raises(methods.PluginError) as error:
        methods.load_plugins("no_such_module_anywhere")
    message = str(error.value)
    assert "\n" not in message and methods.PLUGINS_ENV in message and "no_such_module_anywhere" in message


# ---- models and tasks: a conf/ group file per entry, naming a registered loader --------------------------
@pytest.mark.parametrize("model", group_choices("model"))
def test_every_model_config_names_itself_and_a_registered_source(model: str) -> None:
    from bench.models import LOADERS

    cfg = yaml.safe_load((CONF / "model" / f"{model}.yaml").read_text())
    assert cfg["name"] == model and cfg["source"] in LOADERS and isinstance(cfg["decoder"], bool)


@pytest.mark.parametrize("task", group_choices("task"))
def test_every_task_config_names_itself_and_a_registered_loader(task: str) -> None:
    from bench.tasks import TASK_LOADERS

    cfg = yaml.safe_load((CONF / "task" / f"{task}.yaml").read_text())
    assert cfg["name"] == task and cfg["loader"] in TASK_LOADERS


def test_each_loader_is_its_own_registered_hook() -> None:
    """Loaders register the way methods do: no hook serves several loaders by switching on the name."""
    from bench.tasks import TASK_LOADERS, base

    assert len(set(TASK_LOADERS.values())) == len(TASK_LOADERS)
    with pytest.raises(base.TaskDataError, match="registered twice"):
        base.register_loader("conll")(lambda cfg: None)


# ---- roles: references, PEFT counterparts, cost bounds -------------------------------------------
def test_methods_declare_their_roles_once() -> None:
    assert methods.reference_method("ceiling") == "full_finetune" and methods.reference_method("floor") == "head_only"
    assert methods.peft_counterparts() == {
        "prompt_tuning": "PROMPT_TUNING",
        "prefix_tuning": "PREFIX_TUNING",
        "lora": "LORA",
    }
    bounded = {name: cls.overhead_bound for name, cls in methods.METHODS.items() if cls.overhead_bound}
    assert bounded == {"p_tuning_v2": ("prompt_tuning", "prefix_tuning")}
    assert all(part in methods.METHODS for parts in bounded.values() for part in parts)
    assert comparison.references() == ("full_finetune", "head_only")


def test_a_reference_role_is_held_once_and_only_by_a_baseline() -> None:
    from dataclasses import dataclass

    from methods.registry import MethodConfig, MethodConfigError, register

    @dataclass
    class SecondCeiling(MethodConfig):
        name = "zz_second_ceiling"
        baseline = True
        reference = "ceiling"

    @dataclass
    class NotABaseline(MethodConfig):
        name = "zz_not_a_baseline"
        reference = "floor"

    for cls, message in ((SecondCeiling, "already 'full_finetune'"), (NotABaseline, "on a baseline")):
        with pytest.raises(MethodConfigError, match=message):
            register(cls)
        assert cls.name not in methods.METHODS


def test_bench_names_no_method_and_methods_import_no_bench() -> None:
    """Every list of methods in bench/ derives from the registry's declarations; methods/ stands alone."""
    names = re.compile(r"\b(" + "|".join(methods.method_names()) + r")\b")
    named = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "bench").rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if names.search(line)
    ]
    assert named == []
    importing = re.compile(r"^\s*(from bench\b|import bench\b)", re.MULTILINE)
    assert [p.name for p in (ROOT / "methods").rglob("*.py") if importing.search(p.read_text(encoding="utf-8"))] == []
