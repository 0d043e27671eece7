"""Raw audio and image modalities: decoding, spectrograms, frames (numpy; torch and Pillow lazily).

Audio follows the authors' loaders: mono, resampled to ``sample_rate`` with a band-limited
resampler (soxr's HQ filter, what ``librosa.load`` uses by default since librosa 0.10), tiled (or
cut) to ``seconds``, clipped to [-1, 1], then log(|STFT| + 1e-7) with n_fft 512 and hop 353 ->
[n_fft/2 + 1, frames] (centred frames, zero-padded ends as in librosa 0.10's ``stft``).
Images are decoded with Pillow (the optional extra ``bss[image]``): training takes a random
resized crop and a horizontal flip, evaluation a plain resize; both are normalised with the
ImageNet mean and std. A frames folder gives its first ``frames`` images in sorted name order
(the authors' loader took directory order, which differs between file systems).
"""

from __future__ import annotations

import hashlib
import json
import os
import wave
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bss_cli.bounds import bound_problems, flag_label
from bss_cli.errors import BSSError, ConfigError

AUDIO_EXTS = (".wav",)
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
# per-channel statistics an image modality is normalised with (manifest metadata bss.images)
NORMALISATIONS = {"imagenet": (MEAN, STD),
                  "clip": (np.array([0.48145466, 0.4578275, 0.40821073], np.float32),
                           np.array([0.26862954, 0.26130258, 0.27577711], np.float32)),
                  "none": None}


@dataclass
class MediaConfig:
    """How raw files are turned into tensors; stored in the manifest as ``bss.media``."""

    sample_rate: int = 22050
    seconds: float = 3.0
    n_fft: int = 512
    hop: int = 353
    image_size: int = 224
    frames: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self, label=flag_label) -> "MediaConfig":
        problems = bound_problems(self.to_dict(), label)
        if problems:
            raise ConfigError("bad media decoding settings:\n  - " + "\n  - ".join(problems))
        return self

    @classmethod
    def from_json(cls, text: str | None) -> "MediaConfig":
        if not text:
            return cls()
        try:
            cfg = cls(**json.loads(text))
        except (TypeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"manifest metadata bss.media is not valid ({exc})") from None
        return cfg.validate(lambda name: f"manifest metadata bss.media: {name} =")

    @property
    def n_samples(self) -> int:
        return int(round(self.sample_rate * self.seconds))

    @property
    def spectrogram_shape(self) -> list[int]:
        return [self.n_fft // 2 + 1, 1 + self.n_samples // self.hop]

    @property
    def frames_shape(self) -> list[int]:
        return [self.frames, 3, self.image_size, self.image_size]


def kind_of(value: str, base: Path) -> str | None:
    """The modality kind a path names: 'vector' (.npy), 'audio' (.wav), 'image' (image file or folder)."""
    p = Path(value) if Path(value).is_absolute() else base / value
    ext = p.suffix.lower()
    if ext == ".npy":
        return "vector"
    if ext in AUDIO_EXTS:
        return "audio"
    if ext in IMAGE_EXTS or _is_dir(p):
        return "image"
    return None


def _is_dir(p: Path) -> bool:
    """``is_dir`` for any text: a long inline vector is no path (ENAMETOOLONG), not an error."""
    try:
        return p.is_dir()
    except (OSError, ValueError):
        return False


# --- audio --------------------------------------------------------------------------------------
def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """PCM WAV (8, 16, 24 or 32 bit) -> mono float32 in [-1, 1] and its sample rate."""
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError) as exc:
        raise BSSError(f"not a PCM WAV file ({exc})") from None
    if n == 0 or len(raw) < n * channels * width:
        raise BSSError("the WAV file holds no (or truncated) audio data")
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) / 128
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / (1 << 23)
    elif width == 4:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / (1 << 31)
    else:
        raise BSSError(f"{8 * width}-bit samples are not supported")
    return x.reshape(-1, channels).mean(axis=1), rate


def check_wav(path: Path) -> None:
    """Validation: the file decodes as PCM WAV with audio data (the whole file is read once)."""
    read_wav(path)


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Band-limited resampling with soxr's HQ filter (librosa.load's default ``soxr_hq``): no
    aliasing when down-sampling, no spectral images above the old Nyquist when up-sampling."""
    if rate == target:
        return x
    import soxr

    return soxr.resample(np.ascontiguousarray(x, np.float32), rate, target, quality="HQ").astype(np.float32)


def fix_length(x: np.ndarray, n: int) -> np.ndarray:
    """Tile a short clip (as the scripts' np.tile) or cut a long one to exactly n samples."""
    if len(x) < n:
        x = np.tile(x, -(-n // len(x)))
    return x[:n]


def spectrogram(path: Path, cfg: MediaConfig):
    """log(|STFT| + 1e-7) of the fixed-length mono clip: a [n_fft/2 + 1, frames] float32 tensor."""
    import torch

    x, rate = read_wav(path)
    x = np.clip(fix_length(resample(x, rate, cfg.sample_rate), cfg.n_samples), -1.0, 1.0)
    spec = torch.stft(torch.from_numpy(np.ascontiguousarray(x)), n_fft=cfg.n_fft, hop_length=cfg.hop,
                      window=torch.hann_window(cfg.n_fft), center=True, pad_mode="constant",
                      return_complex=True)
    return torch.log(spec.abs() + 1e-7)


def cached_spectrogram(path: Path, cfg: MediaConfig, cache_dir: Path | None):
    """The spectrogram, read from / written to ``cache_dir`` when given (keyed by file and settings)."""
    import torch

    if cache_dir is None:
        return spectrogram(path, cfg)
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{cfg.to_dict()}".encode()).hexdigest()
    cached = Path(cache_dir) / key[:2] / f"{key}.npy"
    if cached.exists():
        try:
            return torch.from_numpy(np.load(cached, allow_pickle=False))
        except (OSError, ValueError):  # a damaged cache entry is recomputed, never trusted
            pass
    spec = spectrogram(path, cfg)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:  # several workers may race; each renames a whole file into place
        np.save(f, spec.numpy())
    os.replace(tmp, cached)
    return spec


# --- images -------------------------------------------------------------------------------------
def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise ConfigError("image modalities need Pillow, an optional extra of this checkout: .venv/bin/pip install "
                          "-e '.[image]' (or pip install pillow)") from None
    return Image


def frame_files(path: Path, k: int) -> list[Path]:
    """An image file, or the first ``k`` images of a frames folder in sorted name order."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise BSSError("the frames folder holds no images")
        return files[:k]
    return [path]


def check_image(path: Path, k: int) -> None:
    Image = _pil()
    for f in frame_files(path, k):
        try:
            with Image.open(f) as im:
                im.load()  # decode every pixel: verify() alone passes a truncated JPEG
        except Exception as exc:  # Pillow raises many kinds for a broken file
            raise BSSError(f"{f.name} cannot be decoded as an image ({exc})") from None


def load_frames(path: Path, cfg: MediaConfig, train: bool, generator=None, *, indices=None, crop=None,
                channels: int = 3, normalize: str = "imagenet"):
    """[frames, channels, S, S] float32 tensor; short folders repeat their last frame.

    Without ``indices``: the folder's first ``frames`` images, augmented (random resized crop and
    flip) when ``train``. With ``indices`` (positions in the folder's sorted images, a clip's
    window; see :func:`clip_plan`): those images, each resized to ``crop[0]`` and cut to S x S at
    ``crop[1:]`` (the same crop for every frame and modality of the sample, no flip).
    ``channels`` 1 keeps the first channel (depth); ``normalize`` names the statistics of
    :data:`NORMALISATIONS` ("none" leaves values in [0, 1]): the authors normalise RGB frames with
    ImageNet's, Sarcasm's images with CLIP's, Twitter2015's images and depth not at all."""
    import torch

    Image = _pil()
    if indices is None:
        files = frame_files(path, cfg.frames)
        files = files + [files[-1]] * (cfg.frames - len(files))
    else:
        every = frame_files(path, 1 << 30)
        files = [every[min(int(i), len(every) - 1)] for i in indices]
    out = []
    for f in files:
        with Image.open(f) as im:
            im = im.convert("RGB")
            if crop is not None:
                side, x, y = crop
                im = im.resize((side, side), Image.BILINEAR).crop((x, y, x + cfg.image_size, y + cfg.image_size))
            elif train:
                im = _random_resized_crop(im, cfg.image_size, generator)
                if torch.rand((), generator=generator) < 0.5:
                    im = im.transpose(Image.FLIP_LEFT_RIGHT)
            else:
                im = im.resize((cfg.image_size, cfg.image_size), Image.BILINEAR)
            arr = np.asarray(im, np.float32)[:, :, :channels] / 255
            stats = NORMALISATIONS[normalize]
            if stats is not None:
                arr = (arr - stats[0][:channels]) / stats[1][:channels]
        out.append(torch.from_numpy(arr.transpose(2, 0, 1).copy()))
    return torch.stack(out)


CROP_RESIZE = 8 / 7  # clips: frames are resized to 8/7 of the crop first (256 for 224, as the authors' NVGesture loader)


def clip_plan(length: int, cfg: MediaConfig, train: bool, generator=None) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Which time steps of a clip's window (0 .. length - 1) and which crop every modality of one
    sample takes, so that they stay in step: in training ``frames`` consecutive steps from a random
    start and a random S x S crop of the frame resized to 8/7 S (the authors' NVGesture train
    transform, without flip); in evaluation ``frames`` steps evenly spaced over the whole window
    and the centre crop. Steps past a short window repeat its last one."""
    import torch

    k, size = cfg.frames, cfg.image_size
    side = int(round(size * CROP_RESIZE))
    if train:
        start = int(torch.randint(0, max(0, length - k) + 1, (), generator=generator))
        x, y = (int(v) for v in torch.randint(0, side - size + 1, (2,), generator=generator))
        steps = np.minimum(np.arange(start, start + k), length - 1)
    else:
        x = y = (side - size) // 2
        steps = np.linspace(0, length - 1, k).round().astype(np.int64)
    return steps, (side, x, y)


def _random_resized_crop(im, size: int, generator):
    """torchvision's RandomResizedCrop: scale (0.08, 1), ratio (3/4, 4/3), 10 tries, else centre."""
    import math

    import torch

    w, h = im.size
    area = w * h
    for _ in range(10):
        target = area * float(torch.empty(()).uniform_(0.08, 1.0, generator=generator))
        log_ratio = float(torch.empty(()).uniform_(math.log(3 / 4), math.log(4 / 3), generator=generator))
        ratio = math.exp(log_ratio)
        cw, ch = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            x = int(torch.randint(0, w - cw + 1, (), generator=generator))
            y = int(torch.randint(0, h - ch + 1, (), generator=generator))
            return im.resize((size, size), _pil().BILINEAR, box=(x, y, x + cw, y + ch))
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    return im.resize((size, size), _pil().BILINEAR, box=box)


VOLUME_LAYOUTS = ("CTHW", "THWC", "THW", "HWCT")  # HWCT: the authors' NVGesture flow files


def volume_shape(path: Path) -> tuple[int, ...]:
    """A .npy array's shape, from its header alone (memory-mapped: nothing else is read)."""
    return tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape)


def check_volume(a: np.ndarray, layout: str) -> int:
    """The channel count of a usable volume (an array memory-mapped from its file, so only the
    header is read): real numbers (not complex, text or objects), no empty axis; a ValueError
    saying what is wrong otherwise."""
    if a.dtype.kind not in "biuf":
        raise ValueError(f"its values are {a.dtype} ({a.dtype.kind!r}); a volume holds real numbers")
    if 0 in a.shape:
        raise ValueError(f"an empty volume of shape {list(a.shape)} (no time steps, height or width)")
    try:
        channels = volume_channels(a.shape, layout)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    if channels > 64:
        raise ValueError(f"{channels} channels in {layout} layout; expected at most 64")
    return channels


def volume_layout(spec: dict | None, shape: tuple[int, ...]) -> str:
    """A volume column's layout: its ``bss.arrays`` setting, else THW for 3-D arrays, CTHW for 4-D."""
    return (spec or {}).get("layout") or ("THW" if len(shape) == 3 else "CTHW")


def volume_channels(shape: tuple[int, ...], layout: str) -> int:
    """The channel count of a volume of ``shape`` in ``layout``; a ConfigError when they disagree."""
    want = {"CTHW": 4, "THWC": 4, "THW": 3, "HWCT": 4}[layout]
    if len(shape) != want:
        raise ConfigError(f"a {len(shape)}-D array, expected {want}-D ({layout})")
    return 1 if layout == "THW" else int({"CTHW": shape[0], "THWC": shape[-1], "HWCT": shape[2]}[layout])


def volume_steps(shape: tuple[int, ...], layout: str) -> int:
    """The number of time steps of a volume of ``shape`` in ``layout``."""
    return int(shape[{"CTHW": 1, "THWC": 0, "THW": 0, "HWCT": 3}[layout]])


def load_volume(path: Path, cfg: MediaConfig, layout: str = "CTHW", *, steps=None, crop=None):
    """A video-like array (optical flow, depth as numbers) from a .npy file -> [C, frames, S, S]
    float32: ``frames`` time steps evenly spaced over the clip (or the given ``steps``, a clip's
    window), each resized to S x S (bilinear), or with ``crop`` = (side, x, y) resized to side x
    side and cut at (x, y) as :func:`load_frames` does. Memory-mapped: only the steps taken are read."""
    import torch

    a = np.load(path, mmap_mode="r", allow_pickle=False)
    t_axis = {"CTHW": 1, "THWC": 0, "THW": 0, "HWCT": 3}[layout]
    if steps is None:
        steps = np.linspace(0, a.shape[t_axis] - 1, cfg.frames).round().astype(np.int64)
    steps = np.minimum(np.asarray(steps, np.int64), a.shape[t_axis] - 1)
    a = np.asarray(np.take(a, steps, axis=t_axis), np.float32)  # only these steps are read
    if layout == "THW":
        a = a[None]
    elif layout == "THWC":
        a = a.transpose(3, 0, 1, 2)
    elif layout == "HWCT":
        a = a.transpose(2, 3, 0, 1)
    x = torch.from_numpy(np.ascontiguousarray(a))  # [C, K, H, W]
    if crop is None:
        return torch.nn.functional.interpolate(x, size=(cfg.image_size, cfg.image_size), mode="bilinear",
                                               align_corners=False).contiguous()
    side, left, top = crop
    if tuple(x.shape[-2:]) != (side, side):
        x = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    return x[..., top:top + cfg.image_size, left:left + cfg.image_size].contiguous()
