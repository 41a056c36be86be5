"""Device definitions as data: what a device's raw fields are and how each indicator is
derived from them (seed 001 4.3, the original ``josenedefs``), read from the YAML files in
``defs/``. The refiner is generic: it is driven by the indicators a network wants.
"""

from __future__ import annotations

from functools import cache
from graphlib import CycleError, TopologicalSorter
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from stationflow.refine.records import converters

DEFS_PACKAGE = "stationflow.refine.records"
DEF_FILES = ("josene.yaml", "airsenseur.yaml")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RawField(_Model):
    """A value read from each sample, valid when within [min, max]."""

    label: str
    unit: str
    min: float | None = None
    max: float | None = None
    channel: str | None = None  # AirSensEUR: the point's `name` tag
    column: str | None = None  # AirSensEUR: the point's field holding the value


class Indicator(_Model):
    label: str
    unit: str
    inputs: list[str] = Field(min_length=1)
    converter: str
    params: dict[str, Any] = Field(default_factory=dict)
    type: Literal["int", "float"] = "float"
    decimals: int = Field(0, ge=0, le=9)
    min: float
    max: float
    aggregate: Literal["mean", "energetic"] | None = None  # default: energetic for dB

    @property
    def energetic(self) -> bool:
        """dB values average as energies: 10*log10(mean(10^(L/10)))."""
        return self.aggregate == "energetic" or (self.aggregate is None and "dB" in self.unit)

    @property
    def digits(self) -> int:
        return 0 if self.type == "int" else self.decimals


class DeviceDefs(_Model):
    device_type: str
    aliases: list[str] = Field(default_factory=list)
    location: dict[Literal["lon", "lat"], str]
    default_indicators: list[str]
    raw: dict[str, RawField]
    indicators: dict[str, Indicator]

    @model_validator(mode="after")
    def _check(self) -> DeviceDefs:
        problems = []
        for name, ind in self.indicators.items():
            if ind.converter not in converters.CONVERTERS:
                problems.append(f"{name}: unknown converter {ind.converter!r}")
            for i in ind.inputs:
                if i not in self.raw and i not in self.indicators:
                    problems.append(f"{name}: input {i!r} is neither a raw field nor an indicator")
            if ind.min > ind.max:
                problems.append(f"{name}: min {ind.min} > max {ind.max}")
        for name in [*self.default_indicators, *self.location.values()]:
            if name not in self.indicators:
                problems.append(f"{name!r} is not an indicator")
        if problems:
            raise ValueError(f"{self.device_type} definitions: " + "; ".join(problems))
        try:
            self.plan(list(self.indicators))
        except CycleError as e:
            cycle = e.args[1]
            raise ValueError(f"{self.device_type} definitions: a cycle {cycle}") from None
        return self

    def plan(self, wanted: list[str]) -> list[str]:
        """The indicators to compute for ``wanted``, each after the ones it needs.
        Unknown names raise KeyError naming them."""
        unknown = [w for w in wanted if w not in self.indicators]
        if unknown:
            raise KeyError(f"{self.device_type} has no indicator {', '.join(unknown)}")
        graph: dict[str, list[str]] = {}
        todo = list(wanted) + list(self.location.values())
        while todo:
            name = todo.pop()
            if name in graph:
                continue
            deps = [i for i in self.indicators[name].inputs if i in self.indicators]
            graph[name] = deps
            todo += deps
        return list(TopologicalSorter(graph).static_order())

    def raw_fields(self, plan: list[str]) -> list[str]:
        """The raw fields the planned indicators read, in definition order."""
        needed = {i for name in plan for i in self.indicators[name].inputs if i in self.raw}
        return [f for f in self.raw if f in needed]


@cache
def all_defs() -> dict[str, DeviceDefs]:
    """Device type (and alias) -> definitions, from the package's YAML files."""
    out: dict[str, DeviceDefs] = {}
    for name in DEF_FILES:
        text = resources.files(DEFS_PACKAGE).joinpath("defs").joinpath(name).read_text("utf-8")
        d = DeviceDefs.model_validate(yaml.safe_load(text))
        for key in (d.device_type, *d.aliases):
            out[key] = d
    return out


def defs_for(device_type: str) -> DeviceDefs:
    try:
        return all_defs()[device_type]
    except KeyError:
        known = ", ".join(sorted(all_defs()))
        raise KeyError(f"no definitions for device type {device_type!r} (known: {known})") from None
