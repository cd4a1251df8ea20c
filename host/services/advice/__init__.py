"""Clinical decision support: published scores, arrhythmia guidance, personal
baselines, and the alerts they raise.

- :mod:`.news2`: the National Early Warning Score 2 (Royal College of Physicians 2017).
- :mod:`.cha2ds2`: CHA2DS2-VASc and the ESC 2024 CHA2DS2-VA stroke-risk scores.

Every result carries its rationale, the numbers it used and its reference; a
missing or unreliable input is listed, never scored as normal.  This is decision
support, not diagnosis: where a guideline leaves the decision to a clinician the
advice says "for clinician review".

Nothing here imports numpy (the CLI's parser and these scores stay cheap).
"""
