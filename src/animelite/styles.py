"""The style catalog: every model animelite knows is a data entry, not a class.

An entry says where the published weights live (URL pinned to a commit), how to
check them (sha256, or the git blob SHA-1 where that is all upstream publishes),
what format they come in, and how the runtime model behaves (tensor layout, the
multiple its sides must be, the value range). Adding a style means adding an
entry here (or ``animelite models add`` for a local file), never new code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import StyleError
from .options import UnknownStyleError

ANIMEGAN_V2_LICENCE = (
    "AnimeGANv2 weights: free for academic and other non-commercial use; "
    "commercial use needs the author's permission (TachibanaYoshino/AnimeGANv2)."
)
ANIMEGAN_V3_LICENCE = (
    "AnimeGANv3 weights: non-commercial; commercial use needs an authorization "
    "letter from the author (TachibanaYoshino/AnimeGANv3)."
)

#: where the ``measured`` figures below come from: ``scripts/measure_auto_precision.py --count 10 --runs 7``,
#: 10 held-out photos of ../shared/photos/scenes at 512 (the shipped calibration photos left out)
MEASURED_ON = "AMD EPYC, 2 cores (AVX512-VNNI, AVX512-BF16, no AMX); ORT 1.32, OpenVINO 2026.4"


def _measured(*rows: tuple[str, str, float, float, float]) -> tuple[Measured, ...]:
    return tuple(Measured(backend, precision, psnr_db, ssim, speedup, MEASURED_ON)
                 for backend, precision, psnr_db, ssim, speedup in rows)


_PT_BASE = "https://github.com/bryandlee/animegan2-pytorch/raw/25d7b017267208dfaf34026aa3425e518372aa2f/weights/"
_V3_BASE = "https://github.com/tuanmjnh/AnimeGANv3_Video/raw/9d1e5e9e3a2f54a3d6781880a4df1d996e842a7b/resources/"


@dataclass(frozen=True)
class Measured:
    """How a faster precision of a style compared with its fp32 run, as measured (``precision="auto"`` data).

    ``psnr_db``/``ssim``: median over held-out photos at 512 of the output at
    ``precision`` against the fp32 output of the same style and backend;
    ``speedup``: fp32 time / ``precision`` time for the generator at 512 on
    one thread (median of runs side by side) on ``cpu``. ``precision="auto"``
    picks a precision only when its entry says it is equivalent and faster
    (:func:`animelite.quantize.auto_precision`); a style with no entry runs fp32.
    """

    backend: str  # "onnxruntime" | "openvino"
    precision: str  # "int8" | "bf16"
    psnr_db: float
    ssim: float
    speedup: float
    cpu: str = ""


@dataclass(frozen=True)
class Style:
    """One model in the catalog.

    ``source_format`` is what upstream publishes ("tflite", "pt" or "onnx");
    ``variant`` tells the AnimeGANv2 graph builder which upstream semantics to
    reproduce ("tf": TensorFlow resize and layer-norm epsilon; "pytorch": the
    public PyTorch port's align_corners=True resize and GroupNorm epsilon).
    ``layout`` and ``size_multiple`` describe the *runtime* ONNX model.
    """

    name: str
    family: str  # "animeganv2" | "animeganv3"
    file: str  # file name of the published weights in the models directory
    source_format: str  # "tflite" | "pt" | "onnx"
    url: str
    checksum: str  # "sha256:<hex>" or "gitsha1:<hex>" (git blob id)
    layout: str  # "NCHW" | "NHWC" of the runtime ONNX model
    size_multiple: int
    value_range: tuple[float, float]
    licence: str
    description: str
    non_commercial: bool = True
    variant: str = ""  # graph builder variant for AnimeGANv2 sources
    size_bytes: int | None = None
    aliases: tuple[str, ...] = field(default=())
    kind: str = "style"  # "style": an image-to-image generator; "detector": a helper model (faces)
    # True: the file ships inside the package (animelite/models/), so the style works offline with
    # no models directory; the store reads it in place and never downloads or copies it.
    embedded: bool = False
    # embedded styles only: an INT8 model shipped beside the fp32 one (``--precision int8`` with no
    # ``models quantize`` step); a user-made INT8 model in the models directory takes precedence
    int8_file: str = ""
    int8_checksum: str = ""
    # faster precisions as measured against fp32 (scripts/measure_auto_precision.py): what
    # ``precision="auto"`` may choose for this style; empty: auto keeps fp32
    measured: tuple[Measured, ...] = ()

    @property
    def needs_conversion(self) -> bool:
        return self.source_format != "onnx"

    @property
    def runtime_file(self) -> str:
        """File name of the ONNX model the engine runs (converted once, cached)."""
        if self.needs_conversion:
            return f"{self.name}.onnx"
        return self.file


CATALOG: dict[str, Style] = {}


def register(style: Style) -> Style:
    if style.name in CATALOG:
        raise StyleError(f"style {style.name!r} is already in the catalog")
    CATALOG[style.name] = style
    return style


# The default is the embedded student: it works on a fresh install with no
# download, 11x faster than the PyTorch Hayao at 512 on one thread and 28.0 dB
# (median) from Hayao's own output on held-out photos (its model card has the
# figures). The full Hayao stays one `models pull hayao` away.
DEFAULT_STYLE = "hayao-lite"

LITE_LICENCE = (
    "Distilled from the AnimeGANv2 Hayao weights, so non-commercial like them: free for academic and other "
    "non-commercial use; commercial use needs the AnimeGANv2 author's permission (TachibanaYoshino/AnimeGANv2)."
)

register(Style(
    name="hayao-lite",
    family="v2-lite",  # a student of AnimeGANv2 (not its graph: no tiled or PyTorch-reference variants)
    file="hayao_lite.onnx",
    source_format="onnx",
    url="",  # embedded: src/animelite/models/hayao_lite.onnx (model card: HAYAO_LITE.md there)
    checksum="sha256:f28908a7722fe68aafa10ce59213708ec3f4f6aaf2d179a946ddbd764f405713",
    layout="NCHW",
    size_multiple=4,
    value_range=(-1.0, 1.0),
    licence=LITE_LICENCE,
    description="Hayao look from a small student distilled from AnimeGANv2 Hayao; ships inside the package "
                "(works offline, no download), about 7x faster than hayao; the default style.",
    size_bytes=1188328,
    aliases=("lite",),
    embedded=True,
    int8_file="hayao_lite.int8.onnx",
    int8_checksum="sha256:f45aa84280c8344c2bb6e246c167720942d2d07464863ab0a1a5db2c7a2d4f96",
    # (backend, precision, PSNR dB and SSIM to fp32, speed-up over fp32); to the teacher's output the shipped
    # INT8 model is as close as fp32 (28.06 vs 27.97 dB, model card)
    measured=_measured(("onnxruntime", "int8", 45.7, 0.993, 1.98), ("openvino", "int8", 45.9, 0.993, 1.77),
                       ("openvino", "bf16", 58.4, 0.999, 1.96)),
))

register(Style(
    name="hayao",
    family="animeganv2",
    file="animeganv2_hayao_256x256_integer_quant.tflite",
    source_format="tflite",
    url="https://github.com/terryky/tflite_gles_app/raw/11bffd9751cec6e53f176b2386771a2f9db007ae/gl2animegan2/model/animeganv2_hayao_256x256_integer_quant.tflite",
    checksum="sha256:7d9157db18ad9238a7189c4f56786dbb865f980e219c167def0988fc67ffe5e0",
    layout="NCHW",
    size_multiple=4,
    value_range=(-1.0, 1.0),
    licence=ANIMEGAN_V2_LICENCE,
    description="Miyazaki/Hayao look: soft painted skies, warm greens (AnimeGANv2, rebuilt from the full-integer "
                "TFLite release).",
    variant="tf",
    size_bytes=2401840,
    aliases=("miyazaki",),
    measured=_measured(("onnxruntime", "int8", 34.0, 0.912, 2.40), ("openvino", "int8", 34.0, 0.912, 2.41),
                       ("openvino", "bf16", 52.9, 0.999, 1.95)),
))

register(Style(
    name="shinkai",
    family="animeganv3",
    file="animeganv3_shinkai_37.onnx",
    source_format="onnx",
    # The author's own ONNX release of this style. The checksum pinned here is of
    # the ONNX the project's mirror holds (tf2onnx 1.17, opset 17, from the author's
    # AnimeGANv3_Shinkai_37.pb at _V3_BASE); if the release file differs byte for
    # byte, `models pull` says so and `models add FILE --name shinkai` or
    # `models pull shinkai --from DIR` installs a verified copy by hand.
    url="https://github.com/TachibanaYoshino/AnimeGANv3/releases/download/v1.1.0/AnimeGANv3_Shinkai_37.onnx",
    checksum="sha256:1e31ebefb2158d427fed5e9ef94caa7cdfe61ad6fee008d2eb4ea8fb0dbb943f",
    layout="NHWC",
    size_multiple=8,
    value_range=(-1.0, 1.0),
    licence=ANIMEGAN_V3_LICENCE,
    description="Makoto Shinkai look: saturated blue skies and crisp light (AnimeGANv3).",
    size_bytes=4236869,
    # OpenVINO INT8 measured no faster than its fp32: auto keeps fp32 (or bf16) there
    measured=_measured(("onnxruntime", "int8", 42.3, 0.995, 1.56), ("openvino", "int8", 42.4, 0.995, 0.99),
                       ("openvino", "bf16", 55.0, 0.999, 1.96)),
))

register(Style(
    name="cute",
    family="animeganv3",
    file="animeganv3_tiny_cute.onnx",
    source_format="onnx",
    url=_V3_BASE + "AnimeGANv3_tiny_Cute.onnx",
    checksum="sha256:3ef02d6b2939a0e81621abc5beb0e741bb58654570033cd0e97f6b6ef37c1171",
    layout="NHWC",
    size_multiple=16,
    value_range=(-1.0, 1.0),
    licence=ANIMEGAN_V3_LICENCE,
    description="Cute portrait style, small and fast (AnimeGANv3 tiny); best on faces.",
    size_bytes=2452590,
    # OpenVINO runs this style's INT8 (QDQ) model wrongly (14.6 dB from fp32): auto never picks it
    measured=_measured(("onnxruntime", "int8", 43.4, 0.995, 1.46), ("openvino", "int8", 14.6, 0.761, 1.27),
                       ("openvino", "bf16", 54.8, 0.999, 1.69)),
))

_PT_STYLES = [
    ("face_paint_512_v2", "d75102f8f201ddaf8dbe6b913b1a97585b55f838",
     "Face portrait v2: clean anime faces, strong outlines (AnimeGANv2, PyTorch port).", ("face-paint",)),
    ("face_paint_512_v1", "19c1a1da4d9580186109a2b055d91044e5127de6",
     "Face portrait v1: softer, closer to the photo (AnimeGANv2, PyTorch port).", ()),
    ("celeba_distill", "3b7ea61b02254980831cc3bc77af30666dbc999c",
     "Webtoon faces distilled from CelebA (AnimeGANv2, PyTorch port).", ("webtoon",)),
    ("paprika", "58086c9db9fc7a9e5c2876ca31b8079599352643",
     "Paprika look: vivid colours, heavy contrast (AnimeGANv2 official weights, PyTorch port).", ()),
]
for _name, _blob, _desc, _aliases in _PT_STYLES:
    register(Style(
        name=_name,
        family="animeganv2",
        file=f"{_name}.pt",
        source_format="pt",
        url=_PT_BASE + f"{_name}.pt",
        checksum=f"gitsha1:{_blob}",
        layout="NCHW",
        size_multiple=4,
        value_range=(-1.0, 1.0),
        licence=ANIMEGAN_V2_LICENCE,
        description=_desc,
        variant="pytorch",
        aliases=_aliases,
    ))


# Not a style: the face detector used by the face-aware pass (animelite.faces).
# Stylizer refuses it; `models list` shows it with kind "detector". Embedded
# (Apache-2.0, 316 KB; model card src/animelite/models/YUNET.md) so faces are
# on by default with no download; the URL below is where the shipped copy came from.
register(Style(
    name="yunet",
    family="yunet",
    file="yunet_n_dynamic.onnx",
    source_format="onnx",
    url="https://github.com/ShiqiYu/libfacedetection.train/raw/02246e79b1e976c83d1e135a85e0628120c93769/onnx/yunet_n_dynamic.onnx",
    checksum="sha256:104ee26c71d5c270ce79a6b3dced91c91013260d29a6bf18f9296c5b8c4c2b12",
    layout="NCHW",
    size_multiple=1,
    value_range=(0.0, 255.0),
    licence="Apache-2.0 (libfacedetection.train)",
    description="YuNet face detector (boxes + 5 landmarks) for the face-aware pass; ships inside the package, "
                "run by ONNX Runtime.",
    non_commercial=False,
    size_bytes=322906,
    kind="detector",
    embedded=True,
))


def get_style(name: str) -> Style:
    """Look a style up by name or alias (case-insensitive, '-' and '_' alike)."""
    key = name.strip().lower().replace("-", "_")
    for style in CATALOG.values():
        names = [style.name] + list(style.aliases)
        if key in (n.lower().replace("-", "_") for n in names):
            return style
    known = ", ".join(sorted(n for n, s in CATALOG.items() if s.kind == "style"))
    raise UnknownStyleError(f"unknown style {name!r}; known styles: {known}")
