"""The cohort a classification sees: volumes and metadata joined by subject id (pandas), every value checked, every
excluded subject recorded with its reason. Nothing is dropped silently."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hippo_peft.analysis.text import listing
from hippo_peft.errors import InputError, MissingInputError

SEX_CODES = {"f": 0.0, "female": 0.0, "m": 1.0, "male": 1.0, "0": 0.0, "1": 1.0}
SYNTHETIC_MARK = "SYNTHETIC"


def read_table(path: str | Path, what: str) -> pd.DataFrame:
    """A CSV as a table of stripped strings (ids like ``007`` stay strings; nothing becomes NaN).

    Raises:
        FileNotFoundError: no such file.
        ValueError: empty file, blank or repeated column names, ragged rows.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{what} {path} does not exist.")
    try:  # header=None: the header row is checked here, pandas would rename repeated names silently
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, header=None, encoding="utf-8-sig",
                          skip_blank_lines=True)
    except pd.errors.EmptyDataError:
        raise InputError(f"{what} {path} is empty.") from None
    except pd.errors.ParserError as err:  # a row longer than the header
        line = re.search(r"line (\d+)", str(err))
        raise InputError(f"{what} {path}: line {line[1] if line else '?'} has more fields than the header.") from None
    raw = raw[~(raw.fillna("").apply(lambda c: c.str.strip()) == "").all(axis=1)]  # rows of empty fields only
    if raw.empty:
        raise InputError(f"{what} {path} is empty.")
    header = [str(h).strip() for h in raw.iloc[0]]
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated or "" in header:
        raise InputError(f"{what} {path}: blank or repeated column names {repeated or ['<blank>']}.")
    table = raw.iloc[1:].reset_index(drop=True)
    table.columns = header
    short = [str(i + 2) for i in np.flatnonzero(table.isna().any(axis=1))]  # pandas pads short rows with NaN
    if short:
        raise InputError(f"{what} {path}: line(s) {listing(short)} do not have {len(header)} fields like the "
                         f"header.")
    return table.apply(lambda c: c.str.strip())


def _require_columns(table: pd.DataFrame, wanted: list[str], what: str, path, hint: str = "") -> None:
    missing = [c for c in wanted if c not in table.columns]
    if missing:
        raise InputError(f"{what} {path} has no column(s) {', '.join(missing)} (it has: "
                         f"{', '.join(table.columns)}). {hint}".rstrip())


def _check_ids(table: pd.DataFrame, column: str, what: str, path) -> None:
    ids = table[column]
    blank = [str(i + 2) for i in np.flatnonzero(ids == "")]
    if blank:
        raise InputError(f"{what} {path}: empty {column!r} on line(s) {listing(blank)}.")
    dup = sorted(set(ids[ids.duplicated(keep=False)]))
    if dup:
        raise InputError(f"{what} {path}: duplicate id(s) in column {column!r}: {listing(dup)}. Each subject must "
                         f"appear once.")


def _number(value: str, column: str, sex_column: str | None) -> float | None:
    """A finite float, or None when the value is not one; the sex column also takes M/F (M=1, F=0)."""
    if column == sex_column:
        return SEX_CODES.get(value.lower())
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


@dataclass
class Cohort:
    """Subjects that go into the classification, with everything needed to report on them."""
    ids: list[str]
    y: np.ndarray  # 1 = groups[0] (the positive class), 0 = groups[1]
    labels: list[str]  # the target value of each subject
    X: np.ndarray
    feature_names: list[str]
    groups: tuple[str, str]
    volumes: dict[str, np.ndarray]  # volume features (raw and / ICV) for the box plot
    excluded: list[dict] = field(default_factory=list)  # {"subject", "reason"}
    flagged_included: list[dict] = field(default_factory=list)  # {"subject", "flags"}
    synthetic: bool = False


def parse_groups(groups: str | list[str]) -> tuple[str, str]:
    items = [g.strip() for g in (groups.split(",") if isinstance(groups, str) else groups) if g.strip()]
    if len(items) != 2 or items[0] == items[1]:
        raise InputError(f"--groups needs exactly two different groups, e.g. --groups AD,CN (got {groups!r}); the "
                         f"first is the positive class of the AUC.")
    return items[0], items[1]


def build_cohort(volumes_csv: str | Path, metadata_csv: str | Path, target: str, groups, *,
                 id_column: str = "subject", volumes_id_column: str = "case",
                 volume_columns: list[str] | tuple[str, ...] = ("total_mm3",), covariates: list[str] | tuple = (),
                 sex_column: str = "sex", icv_column: str | None = None, icv_normalised_only: bool = False,
                 allow_missing: bool = False, drop_other_groups: bool = False, exclude_flagged: bool = False,
                 folds: int = 5) -> Cohort:
    """Join volumes and metadata by subject id and check everything before any model sees it.

    Args:
        volumes_csv: output of ``hippo-peft volumes`` (or any CSV with an id column and volume columns).
        metadata_csv: one row per subject with the id, the target and the covariates.
        target: metadata column with the group of each subject (e.g. ``diagnosis``).
        groups: two target values, ``"AD,CN"``; the first is the positive class.
        id_column / volumes_id_column: id columns of the metadata / volumes tables; ids must be equal strings.
        volume_columns: volume features (default the total volume).
        covariates: metadata columns added as features; the sex column may hold M/F (M=1, F=0) or 0/1.
        icv_column: metadata column of intracranial volume; adds each volume / ICV as a feature.
        icv_normalised_only: keep only the volume / ICV features, not the raw volumes.
        allow_missing: exclude (and list) subjects present in only one table instead of failing.
        drop_other_groups: exclude (and list) subjects whose target is not one of ``groups``.
        exclude_flagged: exclude (and list) cases with quality flags in the volumes table's ``flags`` column.
        folds: folds of the stratified cross-validation (each group needs at least this many subjects).

    Raises:
        FileNotFoundError: a table is missing.
        ValueError: any bad input; the message lists every offender found.
    """
    groups = parse_groups(groups)
    if folds < 2:
        raise InputError(f"--folds must be >= 2 (got {folds}).")
    volume_columns, covariates = list(volume_columns), list(covariates)
    if not volume_columns:
        raise InputError("--volume-columns: give at least one volume column, e.g. total_mm3.")
    if icv_normalised_only and not icv_column:
        raise InputError("--icv-normalised-only needs --icv-column.")
    vol = read_table(volumes_csv, "volumes CSV")
    meta = read_table(metadata_csv, "metadata CSV")
    _require_columns(vol, [volumes_id_column], "volumes CSV", volumes_csv, "Set --volumes-id-column.")
    available = [c for c in vol.columns if c.endswith("_mm3")]
    _require_columns(vol, volume_columns, "volumes CSV", volumes_csv,
                     f"Volume columns available: {', '.join(available) or 'none'}.")
    _require_columns(meta, [id_column], "metadata CSV", metadata_csv, "Set --id-column.")
    _require_columns(meta, [target], "metadata CSV", metadata_csv, "Set --target.")
    _require_columns(meta, covariates + ([icv_column] if icv_column else []), "metadata CSV", metadata_csv,
                     "Check --covariates / --icv-column.")
    _check_ids(vol, volumes_id_column, "volumes CSV", volumes_csv)
    _check_ids(meta, id_column, "metadata CSV", metadata_csv)
    # One namespace per table, so that equal column names (e.g. both have "file") never clash.
    vol, meta = vol.add_prefix("v:"), meta.add_prefix("m:")
    vid, mid = f"v:{volumes_id_column}", f"m:{id_column}"

    problems, excluded = [], []
    both = meta.merge(vol, how="outer", left_on=mid, right_on=vid, indicator=True, validate="one_to_one")
    only_vol = sorted(both.loc[both["_merge"] == "right_only", vid])
    only_meta = sorted(both.loc[both["_merge"] == "left_only", mid])
    if only_vol or only_meta:
        if allow_missing:
            excluded += [{"subject": s, "reason": "in the volumes CSV only"} for s in only_vol]
            excluded += [{"subject": s, "reason": "in the metadata CSV only"} for s in only_meta]
        else:
            msg = []
            if only_vol:
                msg.append(f"{len(only_vol)} id(s) in the volumes CSV but not in the metadata CSV: "
                           f"{listing(only_vol)}")
            if only_meta:
                msg.append(f"{len(only_meta)} id(s) in the metadata CSV but not in the volumes CSV: "
                           f"{listing(only_meta)}")
            problems.append("; ".join(msg) + " (ids are compared as exact strings; --allow-missing excludes them "
                                             "and lists them in the report)")
    # inner join keeps the metadata's order (which fixes the cross-validation folds)
    rows = meta.merge(vol, how="inner", left_on=mid, right_on=vid, validate="one_to_one")

    other = ~rows[f"m:{target}"].isin(groups)
    if other.any():
        shown = dict(zip(rows.loc[other, mid], rows.loc[other, f"m:{target}"].replace("", "<empty>")))
        if drop_other_groups:
            excluded += [{"subject": s, "reason": f"{target}={v} not in {','.join(groups)}"} for s, v in shown.items()]
        else:
            tally = ", ".join(f"{v} ({list(shown.values()).count(v)})" for v in sorted(set(shown.values())))
            problems.append(f"{len(shown)} subject(s) have a {target!r} outside --groups {','.join(groups)} "
                            f"(values {tally}; case-sensitive): "
                            f"{listing([f'{s} ({v})' for s, v in shown.items()])}. "
                            f"Fix the values or pass --drop-other-groups to exclude them (they are then listed).")
    rows = rows[~other]

    flagged_included = []
    if exclude_flagged and "v:flags" not in rows.columns:
        raise InputError(f"--exclude-flagged: the volumes CSV {volumes_csv} has no 'flags' column (write it with "
                         f"`hippo-peft volumes`), so there is nothing to exclude by; drop the option.")
    if "v:flags" in rows.columns:
        flagged = rows["v:flags"] != ""
        if exclude_flagged:
            excluded += [{"subject": s, "reason": f"quality flags: {f}"}
                         for s, f in zip(rows.loc[flagged, mid], rows.loc[flagged, "v:flags"])]
            rows = rows[~flagged]
        else:
            flagged_included = [{"subject": s, "flags": f}
                                for s, f in zip(rows.loc[flagged, mid], rows.loc[flagged, "v:flags"])]

    numeric = [(f"v:{c}", c, None) for c in volume_columns]
    numeric += [(f"m:{c}", c, sex_column) for c in covariates + ([icv_column] if icv_column and icv_column not in
                                                                  covariates else [])]
    values, bad = {}, []
    for key, column, sex in numeric:
        parsed = rows[key].map(lambda v, c=column, s=sex: _number(v, c, s)).astype(float)  # None -> NaN
        invalid = parsed.isna() | ((parsed <= 0) if column == icv_column else (parsed < 0) if sex is None else False)
        bad += [(i, f"{s}: {column}={v or '<empty>'}")
                for i, s, v in zip(np.flatnonzero(invalid), rows.loc[invalid, mid], rows.loc[invalid, key])]
        values[column] = parsed.to_numpy(dtype=float)
    if bad:
        bad = [text for _, text in sorted(bad, key=lambda b: b[0])]  # subject by subject, as the table reads
        problems.append(f"{len(bad)} non-numeric, missing or invalid value(s) (volumes must be >= 0, ICV > 0, "
                        f"{sex_column!r} M/F/male/female/0/1): {listing(bad)}")
    if problems:
        raise InputError("cannot classify:\n  " + "\n  ".join(problems))

    labels = rows[f"m:{target}"].tolist()
    counts = {g: labels.count(g) for g in groups}
    small = {g: n for g, n in counts.items() if n < folds}
    if small:
        need = min(counts.values())
        hint = (f"use --folds {need} (or fewer) or add subjects" if need >= 2 else
                "add subjects (each group needs at least 2)")
        raise InputError(f"group(s) {', '.join(f'{g} ({n} subject(s))' for g, n in small.items())} have fewer "
                         f"subjects than --folds {folds} (counts after exclusions: "
                         f"{', '.join(f'{g} {n}' for g, n in counts.items())}); stratified {folds}-fold "
                         f"cross-validation needs >= {folds} per group: {hint}.")

    names, cols, vol_feats = [], [], {}
    for c in volume_columns:
        if not icv_normalised_only:
            names.append(c)
            cols.append(values[c])
            vol_feats[c] = values[c]
        if icv_column:
            ratio = values[c] / values[icv_column]
            names.append(f"{c}/{icv_column}")
            cols.append(ratio)
            vol_feats[f"{c}/{icv_column}"] = ratio
    for c in covariates:
        names.append(c)
        cols.append(values[c])
    marked = [rows[c].eq(SYNTHETIC_MARK).all() for c in ("v:file", "m:data_source") if c in rows.columns]
    synthetic = bool(len(rows)) and any(marked)
    return Cohort(ids=rows[mid].tolist(), y=np.array([1 if g == groups[0] else 0 for g in labels]), labels=labels,
                  X=np.column_stack(cols), feature_names=names, groups=groups, volumes=vol_feats,
                  excluded=excluded, flagged_included=flagged_included, synthetic=synthetic)
