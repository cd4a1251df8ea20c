"""The one record reader (sim/records.py): WFDB record -> device counts at a device rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb

from firmware.params import ECG_ADC_MAX_COUNT, ECG_ADC_MIN_COUNT, ECG_COUNTS_PER_MV
from sim.records import (
    RecordError,
    channel_names,
    device_rate_for,
    device_signal,
    mv_to_counts,
    read_annotations,
    read_channel,
    resample_mv,
    to_device_signal,
)

MITDB = Path(__file__).parent / "data" / "mitdb"
REC_101 = str(MITDB / "101")


def test_native_rate_is_the_record_around_its_baseline() -> None:
    ch = read_channel(REC_101, 0)
    assert (ch.fs_hz, ch.adc_gain, ch.baseline, ch.name, ch.units) == (360.0, 200.0, 1024.0,
                                                                       "MLII", "mV")
    sig = device_signal(REC_101, 0)
    raw = wfdb.rdrecord(REC_101, channels=[0], physical=False).d_signal[:, 0]
    assert sig.device_fs_hz == 360 and not sig.resampled and sig.counts.dtype == np.int16
    assert sig.counts.tolist() == (raw.astype(int) - 1024).tolist()
    assert sig.to_record_samples([0, 5, 7199]) == [0, 5, 7199]
    ann = read_annotations(REC_101)
    assert np.array_equal(sig.to_device_samples(ann.samples), ann.samples)
    assert channel_names(REC_101) == ["MLII", "V1"]


def test_resampled_signal_maps_samples_both_ways() -> None:
    ch = read_channel(REC_101, 0)
    sig = to_device_signal(ch.millivolts(), ch.fs_hz, 250)
    assert sig.resampled and len(sig.counts) == 5000 and sig.record_len == 7200
    np.testing.assert_array_equal(
        sig.counts, mv_to_counts(resample_mv(ch.millivolts(), 360.0, 250)))
    ann = read_annotations(REC_101).samples
    dev = sig.to_device_samples(ann)
    assert np.array_equal(dev, np.rint(ann * (250 / 360)).astype(np.int64))
    back = np.array(sig.to_record_samples(dev.tolist()))
    assert np.max(np.abs(back - ann)) <= 1  # 1/250 s steps: within one record sample
    assert sig.to_record_samples([4999, 5000]) == [7199]  # clipped to the record, unique


def test_device_rate_is_the_records_own_or_the_nearest() -> None:
    assert [device_rate_for(f) for f in (360, 250.0, 500, 125, 300, 305, 1000)] == [
        360, 250, 360, 250, 250, 360, 360]  # 305: a tie, the higher rate
    assert device_rate_for(500, (500,)) == 500


def test_mv_to_counts_rounds_half_to_even_and_saturates() -> None:
    mv = np.array([0.0025, 0.0075, -0.0025, 1.0, 1e3, -1e3])
    want = [0, 2, 0, ECG_COUNTS_PER_MV, ECG_ADC_MAX_COUNT, ECG_ADC_MIN_COUNT]
    assert mv_to_counts(mv).tolist() == want


def test_microvolt_header_gives_the_same_counts(tmp_path: Path) -> None:
    mv = read_channel(REC_101, 0).millivolts()
    wfdb.wrsamp("uv", fs=360, units=["uV"], sig_name=["MLII"],
                d_signal=np.rint(mv * 1000 / 5).astype(np.int64)[:, None], fmt=["16"],
                adc_gain=[0.2], baseline=[0], write_dir=str(tmp_path))
    assert np.array_equal(device_signal(tmp_path / "uv").counts, device_signal(REC_101).counts)


def _copy_101(tmp: Path, dat: bytes) -> str:
    for ext in ("hea", "atr"):
        (tmp / f"101.{ext}").write_bytes((MITDB / f"101.{ext}").read_bytes())
    (tmp / "101.dat").write_bytes(dat)
    return str(tmp / "101")


@pytest.mark.parametrize(("keep", "held"), [(3, 1), (3000, 1000), (21597, 7199)])
def test_signal_file_shorter_than_the_header_is_an_error(tmp_path: Path, keep: int,
                                                         held: int) -> None:
    rec = _copy_101(tmp_path, (MITDB / "101.dat").read_bytes()[:keep])
    with pytest.raises(RecordError, match=rf"header says 7200 samples, the \.dat holds {held}$"):
        read_channel(rec, 0)


def test_longer_signal_file_is_read_to_the_header_length(tmp_path: Path) -> None:
    rec = _copy_101(tmp_path, (MITDB / "101.dat").read_bytes() + bytes(30))
    assert len(device_signal(rec).counts) == 7200


def test_errors_are_one_line_and_name_the_record(tmp_path: Path) -> None:
    cases = {
        str(tmp_path / "nope"): "not found",
        REC_101: "--channel 2 does not exist",
    }
    for rec, needle in cases.items():
        with pytest.raises(RecordError, match=needle) as info:
            read_channel(rec, 2)
        assert "\n" not in str(info.value) and Path(rec).name in str(info.value)
    rec = _copy_101(tmp_path, b"")
    (tmp_path / "101.dat").unlink()
    with pytest.raises(RecordError, match=r"signal file 101\.dat not found"):
        read_channel(rec, 0)
    with pytest.raises(RecordError, match="annotations"):
        read_annotations(REC_101, "qrs")
