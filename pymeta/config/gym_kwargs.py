"""The keyword arguments `--env_kwargs` may give the gymnasium environments of pymeta's RL datasets.

Declared per dataset (`DECLARED`, from the constructors of gymnasium's HalfCheetah-v5 and Ant-v5):
the reward weights and the simulation's frame skip and reset noise, each typed and bounded. What may be
passed depends on where the value comes from (`check_env_kwargs`):

- from a model file (the settings it records, i.e. input from whoever wrote the file): the declared
  keys only; no file paths (`xml_file`), no rendering, no other key;
- from the command line (the user's own choice): the declared keys, still typed and bounded, and any
  other keyword the environment takes (e.g. `xml_file` for one's own MuJoCo model) as a JSON value,
  except the rendering ones (`RENDERING`): pymeta never renders, and `render_mode="human"` without a
  display aborts the process.

No TensorFlow, no gymnasium import."""

import math
from typing import Any, Dict, Mapping, NamedTuple, Optional


class Kind(NamedTuple):
    """The type and bounds of one keyword: 'int', 'float', 'bool' or 'range' (a [low, high] pair of
    floats, low < high); `low` / `high` bound a number or both ends of a range."""
    type: str
    low: Optional[float] = None
    high: Optional[float] = None

    def describe(self) -> str:
        what = {"int": "an integer", "float": "a number", "bool": "true or false",
                "range": "a pair [low, high] of numbers, low < high,"}[self.type]
        return what if self.low is None else f"{what} in [{self.low:g}, {self.high:g}]"

    def accepts(self, value: Any) -> bool:
        if self.type == "bool":
            return isinstance(value, bool)
        if self.type == "range":
            return (isinstance(value, list) and len(value) == 2 and all(map(self._number, value))
                    and value[0] < value[1])
        if self.type == "int" and not isinstance(value, int):
            return False
        return self._number(value)

    def _number(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if isinstance(value, int) and abs(value) > 2 ** 53:
            return False
        low = -math.inf if self.low is None else self.low
        high = math.inf if self.high is None else self.high
        return math.isfinite(value) and low <= value <= high


WEIGHT = Kind("float", -1e3, 1e3)  # a reward term's weight
_MUJOCO = {
    "frame_skip": Kind("int", 1, 50),  # simulation steps per environment step (gymnasium's default 5)
    "forward_reward_weight": WEIGHT,
    "ctrl_cost_weight": WEIGHT,
    "reset_noise_scale": Kind("float", 0, 1),
    "exclude_current_positions_from_observation": Kind("bool"),
}
HALFCHEETAH = dict(_MUJOCO)
ANT = {**_MUJOCO, "contact_cost_weight": WEIGHT, "healthy_reward": WEIGHT, "terminate_when_unhealthy": Kind("bool"),
       "healthy_z_range": Kind("range", -1e3, 1e3), "contact_force_range": Kind("range", -1e6, 1e6),
       "include_cfrc_ext_in_observation": Kind("bool")}
DECLARED: Dict[str, Dict[str, Kind]] = {"halfcheetah_vel": HALFCHEETAH, "halfcheetah_dir": HALFCHEETAH,
                                        "ant_dir": ANT}
# the MuJoCo environments' rendering arguments: refused from any source (pymeta never renders)
RENDERING = ("render_mode", "width", "height", "camera_id", "camera_name", "default_camera_config",
             "visual_options", "max_geom")


def check_env_kwargs(dataset: str, kwargs: Mapping[str, Any], source: str, from_file: bool) -> None:
    """Raise ValueError (one line, starting with `source`) unless every keyword of `kwargs` may be
    passed to the environments of `dataset` (see the module doc); `from_file`: the value comes from a
    model file."""
    declared = DECLARED.get(dataset, {})
    for key, value in kwargs.items():
        kind = declared.get(key)
        if kind is not None:
            if not kind.accepts(value):
                raise ValueError(f"{source}: {key} must be {kind.describe()}, got {_short(value)}")
        elif key in RENDERING:
            raise ValueError(f"{source}: {key} is refused: pymeta never renders the environments (and "
                             "render_mode='human' aborts the process without a display); drop it")
        elif from_file:
            raise ValueError(f"{source}: {key} is not a keyword a model file may set for {dataset} (only "
                             f"{', '.join(declared)}); pass --env_kwargs on the command line to choose the "
                             "environments' keywords yourself")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
