"""AKD's factorized space (MnasNet's, per stage)."""

from __future__ import annotations

from edgekd.core.arch import ArchSpec, BlockSpec
from edgekd.core.errors import ConfigError
from edgekd.spaces import Choices, SearchSpace, downsampling_stages, register_space, round_channels


@register_space("mnas")
class MnasSpace(SearchSpace):
    """AKD's factorized hierarchical space (MnasNet): 7 stages, each searched independently for its number of
    layers (base -1/0/+1), op (MBConv expand 1/3/6 or depthwise-separable conv), kernel 3/5/7, SE ratio 0/0.25,
    width multiplier 0.75/1.0/1.25 and skip (identity residual or none).

    The skeleton is MnasNet-A1's (channels 16..320, layers 1,2,3,4,2,3,1); ``width`` scales every channel count
    for small tasks. Stride-2 positions are kept from the deepest end so that the last feature map is about 4x4
    (7x7 at 224): small inputs are not downsampled to nothing.
    """

    BASE_CHANNELS = (16, 24, 40, 80, 112, 192, 320)
    BASE_LAYERS = (1, 2, 3, 4, 2, 3, 1)
    DOWNSAMPLE_AT = ("stem", 1, 2, 3, 5)
    OPS = ("mbconv_e1", "mbconv_e3", "mbconv_e6", "dsconv")

    def __init__(self, resolution: int, in_channels: int, num_classes: int, width: float = 1.0) -> None:
        if width <= 0:
            raise ConfigError(f"width must be > 0, got width={width}")
        self.resolution, self.in_channels, self.num_classes, self.width = resolution, in_channels, num_classes, width
        self.downsample = downsampling_stages(resolution, self.DOWNSAMPLE_AT)
        self.choices = {}
        for i in range(len(self.BASE_CHANNELS)):
            self.choices |= {
                f"s{i}_layers": (-1, 0, 1),
                f"s{i}_op": self.OPS,
                f"s{i}_kernel": (3, 5, 7),
                f"s{i}_se": (0.0, 0.25),
                f"s{i}_width": (0.75, 1.0, 1.25),
                f"s{i}_skip": ("identity", "none"),
            }

    def _channels(self, stage: int, multiplier: float) -> int:
        return round_channels(self.BASE_CHANNELS[stage] * self.width * multiplier)

    def decode(self, choices: Choices) -> ArchSpec:
        self.check(choices)
        stem = round_channels(32 * self.width)
        blocks, cin = [], stem
        for i, base_layers in enumerate(self.BASE_LAYERS):
            op = choices[f"s{i}_op"]
            cout = self._channels(i, choices[f"s{i}_width"])
            for j in range(max(1, base_layers + choices[f"s{i}_layers"])):
                stride = 2 if j == 0 and i in self.downsample else 1
                blocks.append(
                    BlockSpec(
                        op="dsconv" if op == "dsconv" else "mbconv",
                        kernel=choices[f"s{i}_kernel"],
                        out_channels=cout,
                        stride=stride,
                        expand=1 if op == "dsconv" else int(op.removeprefix("mbconv_e")),
                        se_ratio=choices[f"s{i}_se"],
                        residual=choices[f"s{i}_skip"] == "identity" and stride == 1 and cin == cout,
                        stage=i,
                    )
                )
                cin = cout
        return ArchSpec(
            resolution=self.resolution,
            in_channels=self.in_channels,
            num_classes=self.num_classes,
            stem_channels=stem,
            stem_stride=2 if "stem" in self.downsample else 1,
            blocks=tuple(blocks),
            head_channels=round_channels(1280 * self.width),
        )

    def encode(self, spec: ArchSpec) -> Choices:
        choices: Choices = {}
        for i, base_layers in enumerate(self.BASE_LAYERS):
            stage = [b for b in spec.blocks if b.stage == i]
            if not stage:
                raise ConfigError(f"architecture {spec.id} has no blocks in stage {i} of space {self.name!r}")
            first = stage[0]
            widths = [w for w in self.choices[f"s{i}_width"] if self._channels(i, w) == first.out_channels]
            if not widths:
                raise ConfigError(f"stage {i} has {first.out_channels} channels, not a width of space {self.name!r}")
            choices |= {
                f"s{i}_layers": max(-1, min(1, len(stage) - base_layers)),
                f"s{i}_op": "dsconv" if first.op == "dsconv" else f"mbconv_e{first.expand}",
                f"s{i}_kernel": first.kernel,
                f"s{i}_se": first.se_ratio,
                f"s{i}_width": widths[0],
                f"s{i}_skip": "identity" if any(b.residual for b in stage) else "none",
            }
        self.check(choices)
        return choices
