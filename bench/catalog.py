"""``python -m bench.catalog``: the registered methods, models and tasks."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf"


def _yes(flag: bool) -> str:
    return "yes" if flag else "-"


def method_rows() -> list[str]:
    import methods

    rows = [f"{'method':16} {'input':6} {'attention':10} {'MLP':4} {'baseline':8} description"]
    for name, cls in methods.METHODS.items():
        rows.append(f"{name:16} {_yes(cls.input_tokens):6} {_yes(cls.attention_prefix):10} "
                    f"{_yes(cls.reparameterized):4} {_yes(cls.baseline):8} {cls.description}")
    return rows


def group_rows(group: str, columns: tuple[str, ...]) -> list[str]:
    """One line per config of a conf/ group, showing the given fields."""
    rows = [f"{group:16} " + " ".join(f"{c:22}" for c in columns)]
    for path in sorted((CONF / group).glob("*.yaml")):
        cfg = OmegaConf.load(path)
        rows.append(f"{path.stem:16} " + " ".join(f"{str(cfg.get(c, '-')):22}" for c in columns))
    return rows


def catalog() -> str:
    """The whole catalogue as text."""
    parts = [method_rows(), group_rows("model", ("source", "family", "decoder", "hub_id")),
             group_rows("task", ("kind", "primary_metric", "loader"))]
    return "\n\n".join("\n".join(rows) for rows in parts)


if __name__ == "__main__":
    print(catalog())
