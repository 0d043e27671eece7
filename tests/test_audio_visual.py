"""Raw audio + frames in the CREMA-D layout: build-manifest -> score -> train -> inspect."""

import json
import wave

import numpy as np
import pytest
from typer.testing import CliRunner

from bss_cli.cli.app import app

PIL = pytest.importorskip("PIL.Image")
runner = CliRunner()
EMOTIONS = ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]
MEDIA = ["--sample-rate", "8000", "--seconds", "0.25", "--n-fft", "128", "--hop", "64", "--image-size", "16",
         "--frames", "2"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def write_wav(path, freq, rate=16000, seconds=0.2, seed=0):
    t = np.arange(int(rate * seconds)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t) + 0.05 * np.random.default_rng(seed).normal(size=len(t))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        pcm = (np.clip(x, -1, 1) * 32767).astype("<i2")
        w.writeframes(np.repeat(pcm[:, None], 2, axis=1).tobytes())


@pytest.fixture
def crema(tmp_path):
    root = tmp_path / "CREMA-D"
    (root / "AudioWAV").mkdir(parents=True)
    for a, actor in enumerate(range(1001, 1007)):
        for e, emo in enumerate(EMOTIONS):
            clip = f"{actor}_DFA_{emo}_XX"
            write_wav(root / "AudioWAV" / f"{clip}.wav", 200 + 150 * e, seed=a * 10 + e)
            frames = root / "Image-01-FPS" / clip
            frames.mkdir(parents=True)
            for k in range(3):  # names sort differently from creation order on purpose
                colour = (40 * e, 255 - 40 * e, (a * 30 + k * 50) % 255)
                PIL.new("RGB", (12, 10), colour).save(frames / f"frame_{2 - k:02d}.png")
    return root


def test_crema_d_build_score_train_inspect(crema, tmp_path):
    manifest = tmp_path / "crema.parquet"
    r = run("build-manifest", "crema-d", crema, "-o", manifest, *MEDIA)
    assert r.exit_code == 0, r.output
    assert "wrote 36 rows" in r.stdout
    r = run("build-manifest", "crema-d", crema, "-o", tmp_path / "again.parquet", "--json", *MEDIA)
    assert r.exit_code == 0 and json.loads(r.stdout)["splits"] == {"train": 24, "val": 6, "test": 6}
    r = run("inspect", manifest, "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["modalities"]["audio"]["kind"] == "audio" and s["modalities"]["visual"]["kind"] == "image"
    assert s["metadata"]["media"]["frames"] == 2 and s["splits"] == {"train": 24, "val": 6, "test": 6}
    r = run("score", manifest, "-o", tmp_path / "scores.parquet", "--hidden", "4", "--workers", "1")
    assert r.exit_code == 0, r.output
    r = run("train", manifest, "--out", tmp_path / "run", "--hidden", "4", "--epochs", "2", "--batch-size", "8",
            "--cache-dir", tmp_path / "cache", "--quiet", "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert set(summary["test"]) >= {"acc", "acc_audio", "acc_visual", "imbalance"}
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 36  # every clip's spectrogram cached once
    r = run("inspect", tmp_path / "run")
    assert r.exit_code == 0 and "acc_visual" in r.stdout


def test_frames_are_taken_in_sorted_order(crema):
    from bss_cli.data.media import MediaConfig, frame_files, load_frames

    folder = crema / "Image-01-FPS" / "1001_DFA_ANG_XX"
    assert [p.name for p in frame_files(folder, 2)] == ["frame_00.png", "frame_01.png"]
    x = load_frames(folder, MediaConfig(image_size=8, frames=4), train=False)
    assert x.shape == (4, 3, 8, 8) and np.allclose(x[2], x[3])  # a short folder repeats its last frame


def test_spectrogram_shape_and_tiling(tmp_path):
    from bss_cli.data.media import MediaConfig, spectrogram

    write_wav(tmp_path / "a.wav", 440, rate=8000, seconds=0.1)
    cfg = MediaConfig(sample_rate=4000, seconds=0.5, n_fft=128, hop=64)
    spec = spectrogram(tmp_path / "a.wav", cfg)
    assert list(spec.shape) == cfg.spectrogram_shape == [65, 32]
    assert np.isfinite(spec.numpy()).all()


def test_bad_media_are_named_by_row_and_nothing_is_written(crema, tmp_path):
    manifest = tmp_path / "crema.parquet"
    assert run("build-manifest", "crema-d", crema, "-o", manifest, *MEDIA).exit_code == 0
    (crema / "AudioWAV" / "1002_DFA_HAP_XX.wav").write_bytes(b"RIFF....WAVEjunk")
    (crema / "Image-01-FPS" / "1003_DFA_SAD_XX" / "frame_00.png").write_bytes(b"\x89PNG not really")
    import shutil

    shutil.rmtree(crema / "Image-01-FPS" / "1004_DFA_NEU_XX")
    r = run("score", manifest, "-o", tmp_path / "scores.parquet", "--hidden", "4")
    assert r.exit_code == 1
    err = r.stderr
    assert "3 problem(s) in the manifest" in err
    assert "row 9: column 'audio' file 'CREMA-D/AudioWAV/1002_DFA_HAP_XX.wav' cannot be read: not a PCM WAV" in err
    assert "row 17: column 'visual' file 'CREMA-D/Image-01-FPS/1003_DFA_SAD_XX' cannot be read: frame_00.png cannot be decoded" in err
    assert "row 22: column 'visual' names a file or folder that does not exist: 'CREMA-D/Image-01-FPS/1004_DFA_NEU_XX'" in err
    assert not (tmp_path / "scores.parquet").exists()
    r = run("build-manifest", "crema-d", crema, "-o", tmp_path / "again.parquet", *MEDIA)
    assert r.exit_code == 1 and "1004_DFA_NEU_XX.wav: no frames folder with images at" in r.stderr
    assert not (tmp_path / "again.parquet").exists()


def test_resnet_encoders_and_local_weights(tmp_path):
    import torch

    from bss_cli.errors import ConfigError
    from bss_cli.models.fusion import LateFusion, ModelConfig
    from bss_cli.models.resnet import AudioResNet18, VisualResNet18

    audio, visual = AudioResNet18(width=4), VisualResNet18(width=4)
    assert audio(torch.randn(2, 65, 32)).shape == (2, 32)
    assert visual(torch.randn(2, 3, 3, 16, 16)).shape == (2, 32)
    torch.manual_seed(5)
    donor = AudioResNet18(width=4)
    torch.save(donor.state_dict(), tmp_path / "audio.pt")
    cfg = ModelConfig(modalities={"audio": [65, 32], "visual": [2, 3, 16, 16]}, n_classes=6, hidden=4,
                      kinds={"audio": "audio", "visual": "image"}, encoder_weights={"audio": str(tmp_path / "audio.pt")})
    model = LateFusion(cfg)
    got = model.encoders["audio"].state_dict()
    assert all(torch.equal(got[k], v) for k, v in donor.state_dict().items())
    out = model({"audio": torch.randn(3, 65, 32), "visual": torch.randn(3, 2, 3, 16, 16)})
    assert out.fused.shape == (3, 6) and set(out.logits) == {"audio", "visual"}
    torch.save({"unrelated.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    cfg.encoder_weights = {"audio": str(tmp_path / "bad.pt")}
    with pytest.raises(ConfigError, match="no tensor name matches the audio encoder"):
        LateFusion(cfg)


def test_resnet_training_survives_a_final_batch_of_one(crema, tmp_path):
    """24 train clips in batches of 23 leave one sample: BatchNorm cannot train on it, so it is skipped."""
    manifest = tmp_path / "crema.parquet"
    one_frame = [v if i == 0 or MEDIA[i - 1] != "--frames" else "1" for i, v in enumerate(MEDIA)]
    assert run("build-manifest", "crema-d", crema, "-o", manifest, *one_frame).exit_code == 0  # 1x1 maps late on
    r = run("train", manifest, "--out", tmp_path / "run", "--hidden", "4", "--epochs", "1", "--batch-size", "23",
            "--scheduler", "none", "--quiet", "--json")
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output


def test_batch_sampler_skips_a_short_final_batch_only_when_asked(tiny_manifest, tmp_path):
    from bss_cli import ScheduleSampler
    from bss_cli.scheduling.schedule_io import ScheduleJob, write_schedule
    from bss_cli.scheduling.schedulers import ScheduleConfig
    from bss_cli.scoring.scores import score_manifest

    write_schedule(ScheduleJob(score_manifest(tiny_manifest), ScheduleConfig(scheduler="random"), [0]),
                   tmp_path / "s.parquet")
    s = ScheduleSampler(tmp_path / "s.parquet", rows=True)  # 36 samples
    assert [len(b) for b in s.batches(35)] == [35, 1]
    b = s.batches(35, min_size=2)
    assert [len(x) for x in b] == [35] and len(b) == 1
    assert [len(x) for x in s.batches(12, min_size=2)] == [12, 12, 12]
