"""A virtual patient: a scenario played out as device-rate signals with ground truth.

``VirtualPatient(scenario, seed, fs_hz)`` streams, chunk by chunk
(:meth:`VirtualPatient.next_chunk`), what the bedside device's sensors would
deliver: ECG in ADC counts (16 bit, 200 counts/mV, ``sim.adc.ECG_ADC``), red
and infrared PPG (18-bit photodiode counts), impedance respiration (mOhm
counts), a temperature reading and the blood-pressure cuff readings that
completed in the chunk.  :attr:`VirtualPatient.truth` (``sim.truth``) records
everything that really happened.

Per patient, the seed draws the individual variation the scenario allows
(heart and breathing rates, SpO2 and temperature offsets, blood pressure, QRS
size), the PVC morphology (upright or QS; both if ``pvc_multiform``), the AF
RR irregularity and f-wave frequency (4.5-8 Hz) and amplitude, the noise
channel and the random phases of everything.  Same scenario, seed and rate:
byte-identical signals and truth, whatever the chunk sizes (the signals are
made in fixed internal blocks).

Signal chain per internal block: beat schedule (``sim.rhythm``) one second
ahead -> ECGSYN beat templates (scaled per beat by respiration) -> low-pass
term -> + respiratory baseline wander + AF f waves + nstdb noise and mains hum
(``sim.noise``) -> ECG ADC, with lead-off episodes at the rail (or 0).  PPG
pulses per perfused beat (``sim.ppg``).

:class:`EcgsynPatient` is the lightweight patient of the built-in scenario
``ecgsyn`` (:data:`ECGSYN_SCENARIO`, the default of ``medge demo``): an ECGSYN
ECG alone (``sim.ecgsyn``, no noise, PPG or respiration) at a mean heart rate
drawn from the seed, uniform in :data:`ECGSYN_HEART_RATE_BPM`.  It has the
surface the sensor paths and the fleet use (``fs``, ``next_chunk(n).ecg``,
``heart_rate_bpm(t)``, ``truth`` with every beat).  :func:`patient_factory`
makes the patients of any scenario, so a fleet builds every device one way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import numpy.typing as npt

from sim.adc import ECG_ADC, PPG_ADC, RESP_ADC, mv_to_counts
from sim.ecgsyn import EcgStream, EcgsynParams
from sim.noise import EcgNoise
from sim.ppg import PpgModel
from sim.respiration import Respiration
from sim.rhythm import Beat, EcgRenderer, RhythmEvent, RhythmGenerator, RhythmSettings
from sim.scenario import PiecewiseLinear, Scenario, load_scenario
from sim.truth import GroundTruth, NibpReading

__all__ = ["ECGSYN_HEART_RATE_BPM", "ECGSYN_SCENARIO", "EcgChunk", "EcgsynPatient",
           "PatientChunk", "VirtualPatient", "patient_factory"]

#: The built-in scenario of ECGSYN-only patients (no file in sim/scenarios).
ECGSYN_SCENARIO = "ecgsyn"
#: Range of an ECGSYN patient's mean heart rate (uniform, drawn from its seed).
ECGSYN_HEART_RATE_BPM = (55.0, 105.0)

_BLOCK_S = 2.0
_LOOKAHEAD_S = 1.0
_FS_RANGE_HZ = (100, 2000)
_RESP_OHM_PER_DEPTH = 0.6
_QRS_AMPLITUDE_MODULATION = 0.06  # +-6 % per unit of the respiration waveform
_TEMP_NOISE_C = 0.02
_FWAVE_RAMP_S = 0.5


@dataclass(frozen=True)
class PatientChunk:
    start_sample: int
    ecg: npt.NDArray[np.int16]
    ppg_red: npt.NDArray[np.int32]
    ppg_ir: npt.NDArray[np.int32]
    resp: npt.NDArray[np.int16]
    temperature_c: float  # sensor reading at the chunk's end
    nibp: tuple[NibpReading, ...]  # cuff readings completed in this chunk


def _bounded_normal(rng: np.random.Generator) -> float:
    return float(np.clip(rng.standard_normal(), -2.0, 2.0))


class VirtualPatient:
    """See the module docstring.  ``snr_db`` overrides the scenario's noise level
    (``None`` with ``noise=False``: clean ECG, no mains, no lead-off)."""

    def __init__(self, scenario: Scenario | str, seed: int, fs_hz: int, *,
                 noise: bool = True, snr_db: float | None = None,
                 mains_uv: float | None = None, lead_off: bool = True) -> None:
        if not isinstance(fs_hz, int) or not _FS_RANGE_HZ[0] <= fs_hz <= _FS_RANGE_HZ[1]:
            raise ValueError(f"fs_hz must be an integer in {_FS_RANGE_HZ} Hz, got {fs_hz!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        sc = load_scenario(scenario) if isinstance(scenario, str) else scenario
        self.scenario = sc
        self.fs = fs_hz
        self.seed = seed
        fs = fs_hz
        root = np.random.SeedSequence([seed, 0x6D656467])  # "medg"
        (s_var, s_rhythm, s_resp, s_noise, s_misc) = root.spawn(5)
        rng = np.random.default_rng(s_var)
        var, vit, pat, rh, nz = sc.variation, sc.vitals, sc.patient, sc.rhythm, sc.noise

        hr_f = 1.0 + var["heart_rate_percent"] / 100.0 * _bounded_normal(rng)
        rr_f = 1.0 + var["resp_rate_percent"] / 100.0 * _bounded_normal(rng)
        spo2_off = var["spo2_percent"] * _bounded_normal(rng)
        temp_off = var["temperature_c"] * _bounded_normal(rng)
        bp_f = 1.0 + var["blood_pressure_percent"] / 100.0 * _bounded_normal(rng)
        qrs_f = 1.0 + var["qrs_amplitude_percent"] / 100.0 * _bounded_normal(rng)
        pvc_kinds = ("pvc_up", "pvc_down")
        pvc_first = pvc_kinds[int(rng.integers(2))]
        pvc_morph = pvc_kinds if pat["pvc_multiform"] else (pvc_first,)
        af_cv = float(np.clip(rh["af_rr_cv"] + rng.uniform(-0.03, 0.03), 0.1, 0.4))
        f_wave_hz = float(rng.uniform(4.5, 8.0))
        f_wave_mv = float(rng.uniform(0.03, 0.09))
        channel = int(rng.integers(2))
        arrival_s = pat["pulse_arrival_ms"] / 1000.0 * (1.0 + 0.08 * _bounded_normal(rng))

        self.heart_rate_bpm = vit["heart_rate_bpm"].scaled(hr_f)
        self.resp_rate_bpm = vit["resp_rate_bpm"].scaled(rr_f)
        spo2 = vit["spo2_percent"]
        self.spo2_percent = PiecewiseLinear([(t, min(100.0, v + spo2_off))
                                             for t, v in spo2.points])
        self.temperature_c = vit["temperature_c"].scaled(1.0, temp_off)
        self.systolic_mmhg = vit["systolic_mmhg"].scaled(bp_f)
        self.diastolic_mmhg = vit["diastolic_mmhg"].scaled(bp_f)

        events = [RhythmEvent(e["time_s"], e["kind"], e["beats"], e["rate_bpm"],
                              e["duration_s"]) for e in rh["events"]]
        settings = RhythmSettings(
            heart_rate_bpm=self.heart_rate_bpm, hrv_std_bpm=pat["hrv_std_bpm"],
            resp_rate_hz=self.resp_rate_bpm(0.0) / 60.0, segments=rh["segments"],
            af_rr_cv=af_cv, pvc_burden_percent=rh["pvc_burden_percent"],
            pac_burden_percent=rh["pac_burden_percent"],
            pvc_couplet_percent=rh["pvc_couplet_percent"],
            pvc_bigeminy_percent=rh["pvc_bigeminy_percent"],
            pvc_fusion_percent=rh["pvc_fusion_percent"], pvc_morphologies=pvc_morph,
            vt_runs_per_hour=rh["vt_runs_per_hour"], vt_rate_bpm=rh["vt_rate_bpm"],
            vt_beats=(int(rh["vt_beats"][0]), int(rh["vt_beats"][1])),
            pauses_per_hour=rh["pauses_per_hour"], pause_s=rh["pause_s"], events=events)
        self.rhythm = RhythmGenerator(settings, fs, np.random.default_rng(s_rhythm))
        self._af = self.rhythm.af_intervals()
        self.respiration = Respiration(self.resp_rate_bpm, np.random.default_rng(s_resp))
        self.renderer = EcgRenderer(fs)

        # mV per model unit: the normal beat at the starting rate has the QRS p-p asked for.
        self.qrs_pp_mv = pat["qrs_amplitude_mv"] * qrs_f
        g, pre = self.renderer.template("normal", float(round(self.heart_rate_bpm(0.0))))
        w = round(0.06 * fs)
        self._mv_per_unit = self.qrs_pp_mv / float(np.ptp(g[max(0, pre - w) : pre + w + 1]))
        self._f_wave = (f_wave_hz, f_wave_mv, float(rng.uniform(0, 2 * math.pi)))
        self._wander_mv = nz["resp_wander_mv"]

        noise_rng = np.random.default_rng(s_noise)
        use_snr = nz["snr_db"] if snr_db is None else snr_db
        self.snr_db = use_snr if (noise and nz["enabled"]) else None
        self.noise = EcgNoise(fs, noise_rng, qrs_pp_mv=self.qrs_pp_mv, snr_db=self.snr_db,
                              weights=nz["weights"], mains_hz=nz["mains_hz"],
                              mains_uv=(nz["mains_uv"] if mains_uv is None else mains_uv)
                              if noise else 0.0, channel=channel)
        self.ppg = PpgModel(fs, perfusion_index_percent=pat["perfusion_index_percent"],
                            pulse_arrival_s=arrival_s)
        s_lead, s_ppg, s_temp, s_nibp = s_misc.spawn(4)
        self._misc = np.random.default_rng(s_lead)
        self._ppg_rng = np.random.default_rng(s_ppg)
        self._temp_rng = np.random.default_rng(s_temp)
        self._nibp_rng = np.random.default_rng(s_nibp)
        self._lead_off_level = ECG_ADC.rails[1] if nz["lead_off_level"] == "rail" else 0
        lead = [(round(e["time_s"] * fs), round((e["time_s"] + e["duration_s"]) * fs))
                for e in nz["lead_off"]] if (noise and lead_off) else []
        if noise and lead_off and nz["lead_off_per_hour"] > 0:
            t = 0.0
            while True:
                t += float(self._misc.exponential(3600.0 / nz["lead_off_per_hour"]))
                if t >= sc.duration_s:
                    break
                d = float(self._misc.uniform(*nz["lead_off_s"]))
                lead.append((round(t * fs), round((t + d) * fs)))
                t += d
        self._lead_off = sorted(lead)
        self._nibp_interval = nz_interval = sc.nibp["interval_s"]
        self._nibp_noise = sc.nibp["noise_mmhg"]
        self._next_nibp = nz_interval / 2.0

        self.truth = GroundTruth(fs_hz=fs, scenario=sc.name, seed=seed, patient={
            "heart_rate_factor": hr_f, "resp_rate_factor": rr_f, "spo2_offset_percent": spo2_off,
            "temperature_offset_c": temp_off, "blood_pressure_factor": bp_f,
            "qrs_pp_mv": self.qrs_pp_mv, "pvc_morphologies": list(pvc_morph),
            "af_rr_cv": af_cv, "f_wave_hz": f_wave_hz, "f_wave_mv": f_wave_mv,
            "pulse_arrival_s": arrival_s, "noise_channel": channel, "snr_db": self.snr_db,
            "mains_hz": nz["mains_hz"], "on_oxygen": pat["on_oxygen"],
            "spo2_target_percent": list(pat["spo2_target_percent"]),
        })
        self.truth.lead_off = list(self._lead_off)
        self._block = round(_BLOCK_S * fs)
        self._gen_pos = 0
        self._buf: list[np.ndarray] = [np.empty(0, np.int16), np.empty(0, np.int32),
                                       np.empty(0, np.int32), np.empty(0, np.int16)]
        self._pending: list[tuple[np.ndarray, ...]] = []  # generated blocks, not yet joined
        self._pending_samples = 0
        self._pos = 0
        self._next_vitals_s = 0

    @property
    def position(self) -> int:
        """Absolute index of the next sample :meth:`next_chunk` returns."""
        return self._pos

    # ------------------------------------------------------------ one block

    def _f_waves(self, t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        out = np.zeros(t.size)
        if not self._af:
            return out
        mask = np.zeros(t.size)
        for a, b in self._af:
            mask += np.clip((t - a) / _FWAVE_RAMP_S, 0, 1) * np.clip((b - t) / _FWAVE_RAMP_S, 0, 1)
        if not mask.any():
            return out
        f0, amp, ph = self._f_wave
        phi = 2 * math.pi * f0 * t + (0.6 / 0.12) * np.sin(2 * math.pi * 0.12 * t + ph) + ph
        return mask * amp * (np.sin(phi) + 0.3 * np.sin(2 * phi + 0.7))

    def _generate_block(self) -> None:
        fs, n, s = self.fs, self._block, self._gen_pos
        for b in self.rhythm.beats_until(s + n + round(_LOOKAHEAD_S * fs)):
            t_r = b.sample / fs
            r = float(self.respiration.value(t_r)[0])
            self.renderer.add_beat(b.sample, b.morphology, b.rate_bpm,
                                   1.0 + _QRS_AMPLITUDE_MODULATION * 2.0 * r)
            self.ppg.add_beat(b.sample, b.pulse, 60.0 / b.rate_bpm, self.spo2_percent(t_r), r)
            self.truth.beats.append(b)
        t = (s + np.arange(n)) / fs
        resp = self.respiration.value(t)
        ecg_mv = self.renderer.take(n) * self._mv_per_unit
        ecg_mv += self._wander_mv * 2.0 * resp
        ecg_mv += self._f_waves(t)
        ecg_mv += self.noise.next_chunk(n)
        ecg = ECG_ADC.to_counts(ecg_mv)
        for a, b in self._lead_off:
            if a < s + n and b > s:
                ecg[max(a, s) - s : min(b, s + n) - s] = self._lead_off_level
        red, ir = self.ppg.take(n, resp)
        red_c = PPG_ADC.to_counts(red, self._ppg_rng)
        ir_c = PPG_ADC.to_counts(ir, self._ppg_rng)
        resp_c = RESP_ADC.to_counts(_RESP_OHM_PER_DEPTH * resp)
        self.truth.breaths_s.extend(self.respiration.breaths_until((s + n) / fs))
        self._gen_pos = s + n
        while self._next_vitals_s * fs < s + n:
            self._vitals_row(float(self._next_vitals_s))
            self._next_vitals_s += 1
        self._pending.append((ecg, red_c, ir_c, resp_c))
        self._pending_samples += n

    def _vitals_row(self, t: float) -> None:
        sbp, dbp = self.systolic_mmhg(t), self.diastolic_mmhg(t)
        self.truth.vitals.append((
            t, self.heart_rate_bpm(t), self.truth.heart_rate_from_beats(t),
            self.resp_rate_bpm(t), self.spo2_percent(t), self.temperature_c(t),
            sbp, dbp, (sbp + 2.0 * dbp) / 3.0))

    def _nibp_until(self, t_end: float) -> tuple[NibpReading, ...]:
        out = []
        while self._next_nibp <= t_end:
            t = self._next_nibp
            e = self._nibp_noise
            sbp = round(self.systolic_mmhg(t) + e * float(self._nibp_rng.standard_normal()))
            dbp = round(self.diastolic_mmhg(t) + e * float(self._nibp_rng.standard_normal()))
            dbp = min(dbp, sbp - 5)
            r = NibpReading(t, sbp, dbp, round((sbp + 2 * dbp) / 3))
            out.append(r)
            self.truth.nibp.append(r)
            self._next_nibp += self._nibp_interval
        return tuple(out)

    # -------------------------------------------------------------- stream

    def next_chunk(self, n_samples: int) -> PatientChunk:
        """The next ``n_samples`` of every channel."""
        if not isinstance(n_samples, int) or n_samples < 0:
            raise ValueError(f"n_samples must be a non-negative integer, got {n_samples!r}")
        while self._buf[0].size + self._pending_samples < n_samples:
            self._generate_block()
        if self._pending:
            self._buf = [np.concatenate([b, *(blk[i] for blk in self._pending)])
                         for i, b in enumerate(self._buf)]
            self._pending, self._pending_samples = [], 0
        parts = [b[:n_samples] for b in self._buf]
        self._buf = [b[n_samples:] for b in self._buf]
        start = self._pos
        self._pos += n_samples
        self.truth.samples = self._pos
        t_end = self._pos / self.fs
        temp = round(self.temperature_c(t_end)
                     + _TEMP_NOISE_C * float(self._temp_rng.standard_normal()), 2)
        return PatientChunk(start, parts[0], parts[1], parts[2], parts[3], temp,
                            self._nibp_until(t_end))

    def run(self, duration_s: float) -> PatientChunk:
        """The next ``duration_s`` seconds as one chunk."""
        return self.next_chunk(round(duration_s * self.fs))


@dataclass(frozen=True)
class EcgChunk:
    start_sample: int
    ecg: npt.NDArray[np.int16]


class EcgsynPatient:
    """An ECGSYN ECG at a mean heart rate drawn from ``seed`` (module docstring)."""

    def __init__(self, seed: int, fs_hz: int) -> None:
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        rng = np.random.default_rng(seed)
        self.fs = fs_hz
        self.seed = seed
        self.mean_heart_rate_bpm = float(rng.uniform(*ECGSYN_HEART_RATE_BPM))
        params = EcgsynParams(sample_rate_hz=fs_hz, heart_rate_mean_bpm=self.mean_heart_rate_bpm)
        self.stream = EcgStream(params, rng)
        self.truth = GroundTruth(fs_hz=fs_hz, scenario=ECGSYN_SCENARIO, seed=seed,
                                 patient={"heart_rate_mean_bpm": self.mean_heart_rate_bpm})
        self._rr_prev_s = 0.0

    @property
    def position(self) -> int:
        """Absolute index of the next sample :meth:`next_chunk` returns."""
        return self.truth.samples

    def heart_rate_bpm(self, t_s: float) -> float:
        return self.mean_heart_rate_bpm

    def next_chunk(self, n_samples: int) -> EcgChunk:
        """The next ``n_samples`` of ECG in counts; their beats go to :attr:`truth`."""
        start = self.truth.samples
        ecg = mv_to_counts(self.stream.next_chunk(n_samples))
        for r, rr in zip(self.stream.last_r_peaks.tolist(), self.stream.last_rr_s.tolist()):
            self.truth.beats.append(Beat(int(r), "N", "normal", "NSR", 60.0 / rr, 1.0,
                                         self._rr_prev_s))
            self._rr_prev_s = rr
        self.truth.samples = start + n_samples
        return EcgChunk(start, ecg)


def patient_factory(scenario: str | Path | Scenario) -> Callable[[int, int], Any]:
    """``make(seed, fs_hz)`` for the patients of ``scenario``: :data:`ECGSYN_SCENARIO`
    (an :class:`EcgsynPatient`), else a bundled scenario name, a path or a
    :class:`sim.scenario.Scenario` (a :class:`VirtualPatient`; the file is read once)."""
    if isinstance(scenario, str) and scenario == ECGSYN_SCENARIO:
        return EcgsynPatient
    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)

    def make(seed: int, fs_hz: int) -> VirtualPatient:
        return VirtualPatient(sc, seed, fs_hz)

    return make
