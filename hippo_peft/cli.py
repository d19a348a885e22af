"""The `hippo-peft` command: what nnU-Net's own commands do not cover."""
from __future__ import annotations

import argparse
import logging
import sys
import textwrap

from hippo_peft.errors import HippoPeftError, InputError
from hippo_peft.networks.presets import ARCHS, PRESETS


def _cmd_plan(args):
    from hippo_peft.nnunet.planning import plan_dataset
    plan_dataset(args.dataset, args.arch, args.preset, args.patch_size, args.plans_name, args.overwrite, args.np,
                 preprocess=not args.no_preprocess, verify=not args.no_verify)


def _cmd_env(args):
    import os

    from hippo_peft.nnunet.env import NNUNET_PATH_VARS, SHIM_NAME, ext_trainer_export_line, nnunet_trainer_dir
    print(ext_trainer_export_line())
    for name in NNUNET_PATH_VARS:
        value = os.environ.get(name)
        print(f"# {name}={value}" if value else f"# {name} is NOT set: export {name}=/path/to/{name}")
    shim = nnunet_trainer_dir() / SHIM_NAME
    print(f"# in-tree shim: {'installed at ' + str(shim) if shim.exists() else 'not installed (optional)'}")


def _cmd_install_shim(args):
    from hippo_peft.nnunet.env import install_shim
    print(f"Wrote {install_shim()}; nnU-Net now finds hippo_peft's trainers without nnUNet_extTrainer.")


def _cmd_uninstall_shim(args):
    from hippo_peft.nnunet.env import uninstall_shim
    removed = uninstall_shim()
    print(f"Removed {removed}" if removed else "No hippo_peft shim was installed.")


def _cmd_import_weights(args):
    from hippo_peft.nnunet.import_weights import import_weights
    import_weights(args.source, args.plans, args.output, args.configuration, overwrite=args.overwrite,
                   trust_pickle=args.trust_pickle, source_labels=args.source_labels)


def _cmd_convert_weights(args):
    from hippo_peft.nnunet.import_weights import convert_weights
    convert_weights(args.source, args.output, args.trust_pickle, args.overwrite)


def _cmd_export_adapter(args):
    from hippo_peft.nnunet.adapter_files import export_adapter
    export_adapter(args.fold_dir, args.output, args.overwrite)


def _cmd_apply_adapter(args):
    from hippo_peft.nnunet.adapter_files import apply_adapter
    apply_adapter(args.adapter, args.base, args.plans, args.output, args.merge, args.overwrite, args.trust_pickle)


def _cmd_merge(args):
    from hippo_peft.nnunet.adapter_files import merge_model
    merge_model(args.model_dir, args.output, args.folds, args.overwrite)


def _cmd_demo(args):
    from hippo_peft.experiments.demo import run_demo
    run_demo(workdir=args.workdir, raw=args.raw, arch=args.arch, preset=args.preset, keep=args.keep,
             method=args.method)


def _cmd_benchmark(args):
    from hippo_peft.experiments.benchmark import run_benchmark
    n_test = None if args.n_test == "all" else int(args.n_test) if args.n_test.lstrip("-").isdigit() else "bad"
    if n_test == "bad":
        raise InputError(f"--n-test {args.n_test}: give a number of cases or 'all'.")
    run_benchmark(args.workdir, target=args.target, source=args.source, archs=args.arch, methods=args.methods,
                  shots=args.shots, draws=args.draws, seed=args.seed, preset=args.preset, iterations=args.iterations,
                  source_iterations=args.source_iterations, device=args.device, n_test=n_test,
                  test_cases=args.test_cases, train_draws_file=args.train_draws, n_source=args.n_source,
                  n_val=args.n_val, repeats=args.repeats, trust_pickle=args.trust_pickle, qc_page=args.qc_page,
                  only_draws=args.only_draws)


def _cmd_benchmark_report(args):
    from hippo_peft.experiments.benchmark import write_folder_report
    print(f"report: {write_folder_report(args.workdir, qc_page=args.qc_page)}")


QC_PAGE_HELP = ("also draw each method's worst and best test case (image, prediction, reference) into "
                "report/qc/index.html, as hippo-peft qc does (off: pictures take a while)")
TRUST_HELP = ("unpickle the file even if it needs globals outside the allow-list; it can run code: only for "
              "files whose origin you trust")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions keep their line breaks; an option's help ends with its default when it has a value, unless the
    help states it itself (a default that depends on other options); a switch is off unless given."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or "(default:" in text or default is None or default is False or default is argparse.SUPPRESS
                or not (action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE))):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        shown = (shown or "none").replace("%", "%%")
        return f"{text} (default: {shown})" if text else f"default: {shown}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hippo-peft", formatter_class=HelpFormatter,
        description="What nnU-Net's own commands do not cover: plans for UNETR and SwinUNETR,\n"
                    "pre-trained weights and adapter files, a demo, the few-shot benchmark, and\n"
                    "volumes, QC pictures and group classification of predicted hippocampus label\n"
                    "maps. hippo-peft COMMAND -h explains each command.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("plan", help="plan + preprocess 3d_fullres for UNETR/SwinUNETR (nnU-Net's planner underneath)",
                       description="Write a plans file for UNETR or SwinUNETR (nnU-Net's planner underneath, with a\n"
                                   "patch size the network accepts) and preprocess the dataset for it, so that\n"
                                   "nnUNetv2_train -p <plans name> trains one of hippo_peft's trainers.")
    s.add_argument("-d", "--dataset", required=True, help="dataset id or name (DatasetXXX_Name)")
    s.add_argument("--arch", required=True, choices=sorted(ARCHS), help="backbone")
    s.add_argument("--preset", default="paper", choices=sorted(PRESETS["unetr"]),
                   help="network size: paper (GPU), compact (CPU in minutes), tiny (tests)")
    s.add_argument("--patch-size", type=int, nargs=3, metavar=("X", "Y", "Z"),
                   help="explicit patch size (multiples of 16 for UNETR, 32 for SwinUNETR); for UNETR transfer, "
                        "use the source's patch size (default: nnU-Net's, rounded up)")
    s.add_argument("--plans-name", help="plans identifier (default: nnUNetPlans_<ARCH>_<preset>)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing plans file of that name")
    s.add_argument("-np", type=int, default=2, help="processes for fingerprint and preprocessing")
    s.add_argument("--no-preprocess", action="store_true", help="write the plans only")
    s.add_argument("--no-verify", action="store_true", help="skip nnU-Net's dataset integrity check")
    s.set_defaults(func=_cmd_plan)

    s = sub.add_parser("env", help="print the nnUNet_extTrainer export line and check nnU-Net's variables",
                       description="Print the line that lets nnU-Net find hippo_peft's trainers\n"
                                   "(export nnUNet_extTrainer=...) and whether nnUNet_raw, nnUNet_preprocessed and\n"
                                   "nnUNet_results are set.")
    s.set_defaults(func=_cmd_env)
    s = sub.add_parser("install-shim", help="(optional) write a module into nnunetv2's trainer folder so that nnU-Net "
                                            "finds hippo_peft's trainers without nnUNet_extTrainer")
    s.set_defaults(func=_cmd_install_shim)
    s = sub.add_parser("uninstall-shim", help="remove the module install-shim wrote")
    s.set_defaults(func=_cmd_uninstall_shim)

    s = sub.add_parser("import-weights", help="turn a foreign checkpoint (MONAI state dict, state_dict/net wrapper, "
                                              "nnU-Net checkpoint) into a -pretrained_weights file for a plans file")
    s.add_argument("source", help=".pt/.pth/.ckpt/.safetensors checkpoint")
    s.add_argument("--plans", required=True, help="target plans file written by hippo-peft plan "
                                                  "($nnUNet_preprocessed/DatasetXXX/nnUNetPlans_UNETR_paper.json)")
    s.add_argument("-c", "--configuration", default="3d_fullres", help="configuration of the plans file")
    s.add_argument("-o", "--output", required=True, help="checkpoint to write")
    s.add_argument("--source-labels", default=None,
                   help="the source head's classes in row order, comma-separated, background first (e.g. "
                        "background,hippocampus), for a file that does not record them; without it a foreign head "
                        "is not copied (nnU-Net checkpoints record their labels)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    s.add_argument("--trust-pickle", action="store_true", help=TRUST_HELP)
    s.set_defaults(func=_cmd_import_weights)

    s = sub.add_parser("export-adapter", help="write a trained adapter (safetensors + JSON config) from a fold folder")
    s.add_argument("fold_dir", help="$nnUNet_results/DatasetXXX/<adapter trainer>__<plans>__<config>/fold_N")
    s.add_argument("-o", "--output", required=True, help="folder to write adapter.safetensors + adapter_config.json")
    s.add_argument("--overwrite", action="store_true", help="replace an existing adapter folder")
    s.set_defaults(func=_cmd_export_adapter)

    s = sub.add_parser("convert-weights", help="turn a trusted research checkpoint (pickled extras such as "
                                               "argparse.Namespace) into a plain .safetensors file, once")
    s.add_argument("source", help=".pt/.pth/.ckpt checkpoint")
    s.add_argument("-o", "--output", required=True, help=".safetensors file to write")
    s.add_argument("--trust-pickle", action="store_true", help=TRUST_HELP)
    s.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    s.set_defaults(func=_cmd_convert_weights)

    s = sub.add_parser("apply-adapter", help="base weights + adapter file -> an nnU-Net model folder; refuses an "
                                             "adapter trained on other base weights")
    s.add_argument("adapter", help="folder written by export-adapter")
    s.add_argument("--base", required=True, help="the pre-trained checkpoint the adapter was trained from")
    s.add_argument("--plans", required=True, help="plans file of the adapter's training (e.g. the model folder's "
                                                  "plans.json, with dataset.json beside it)")
    s.add_argument("-o", "--output", required=True, help="model folder to write (fold_all/checkpoint_final.pth)")
    s.add_argument("--merge", action="store_true", help="fold the adapter into the base network's weights")
    s.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    s.add_argument("--trust-pickle", action="store_true", help=TRUST_HELP.replace("the file", "the --base checkpoint"))
    s.set_defaults(func=_cmd_apply_adapter)

    s = sub.add_parser("merge", help="fold a trained adapter model folder (all folds) into plain base-network "
                                     "checkpoints for nnUNetv2_predict_from_modelfolder")
    s.add_argument("model_dir", help="$nnUNet_results/DatasetXXX/<adapter trainer>__<plans>__<config>")
    s.add_argument("-o", "--output", required=True, help="new model folder to write")
    s.add_argument("-f", "--folds", nargs="+", help="folds to merge (default: every fold with checkpoint_final.pth)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    s.set_defaults(func=_cmd_merge)

    from hippo_peft.experiments.benchmark import NNUNET_METHODS, all_methods
    s = sub.add_parser("demo", help="the whole pipeline on CPU on generated phantoms (or --raw DATASET)",
                       description="The whole pipeline on CPU in a private nnU-Net tree: generated phantoms (or\n"
                                   "--raw DATASET as the target), hippo-peft plan, source pre-training, adaptation\n"
                                   "of the target (--method), nnU-Net's validation and Dice.")
    s.add_argument("--workdir", help="keep the nnU-Net tree here, a new or empty folder (default: a temporary "
                                     "folder, removed afterwards)")
    s.add_argument("--raw", help="an nnU-Net raw dataset folder (DatasetXXX_Name) to use as the target task "
                                 "(default: generated phantoms)")
    s.add_argument("--arch", default="unetr", choices=sorted(ARCHS), help="backbone")
    s.add_argument("--preset", default="compact", choices=sorted(PRESETS["unetr"]), help="network size")
    s.add_argument("--keep", action="store_true", help="keep the temporary folder")
    demo_methods = [m for m in all_methods() if m not in NNUNET_METHODS]
    s.add_argument("--method", default="lorapt", choices=demo_methods, metavar="METHOD",
                   help=f"how the target is adapted, one of {', '.join(demo_methods)}: lorapt = adapter + CNN "
                        f"decoder + head, the papers' setting; lorapt-strict = adapter + head; full = full "
                        f"fine-tuning")
    s.set_defaults(func=_cmd_demo)

    from hippo_peft.analysis import classify, qc, volumes
    volumes.register(sub)
    qc.register(sub)
    classify.register(sub)

    from hippo_peft.experiments import benchmark as bench
    from hippo_peft.experiments.benchmark import PROFILES, default_methods
    s = sub.add_parser("benchmark", help="few-shot transfer: source pre-training, k-shot draws, every method and "
                                         "nnU-Net from scratch with the same iteration budget; table, CSV/JSON, plots",
                       description=bench.__doc__)
    s.add_argument("--target", required=True, help="labelled nnU-Net raw dataset folder (imagesTr + labelsTr)")
    s.add_argument("--source", help="an nnU-Net raw dataset folder to pre-train on, a checkpoint (.pth/.pt/"
                                    ".safetensors, MONAI or nnU-Net) to start from, or 'label-shift' (a source made "
                                    "of --n-source target cases with all labels merged) (default: "
                                    "Dataset002_BraTS2015mini beside the target)")
    s.add_argument("--workdir", required=True, help="folder for everything the benchmark writes; rerun the same "
                                                    "command to resume an interrupted benchmark")
    s.add_argument("--arch", nargs="+", default=["unetr"], choices=sorted(ARCHS), help="backbone(s)")
    s.add_argument("--methods", nargs="+", default=list(default_methods()), metavar="METHOD",
                   help=f"any of {', '.join(all_methods())} (adapter methods train the adapter + CNN decoder + head as"
                        f" the papers do, <method>-strict the adapter + head only, decoderonly the same decoder + "
                        f"head without an adapter, cnnonly every CNN part; nnunet: nnU-Net's default trainer from "
                        f"scratch; nnunet-ft: the same pre-trained on the source). A method may carry learning rates:"
                        f" lorapt@3e-4 (every group), lorapt@3e-4,1e-3 (adapter, decoder + head). Our backbones' "
                        f"methods start the segmentation head from the source's head; +freshhead starts it fresh "
                        f"(lorapt+freshhead, full@3e-3+freshhead; not for nnunet / nnunet-ft, whose head always "
                        f"starts fresh)")
    s.add_argument("--shots", nargs="+", type=int, default=[5, 10, 20], help="k values: labelled cases per draw")
    s.add_argument("--draws", type=int, default=3, help="random draws of k cases per k")
    s.add_argument("--repeats", type=int, default=1,
                   help="train every run this many times (nnU-Net does not seed its runs, so repeats differ: the "
                        "spread of one draw); each repeat gets its own nnU-Net fold, and repeats after the first a "
                        "-r<N> suffix on the run name")
    s.add_argument("--only-draws", type=int, nargs="+", metavar="D",
                   help="run only these draws (numbered from 0 as in the run names' -d<D>), e.g. more repeats of "
                        "the one draw that lost a label; the folder keeps every draw (default: all)")
    s.add_argument("--seed", type=int, default=0, help="seed of the test set and the draws")
    s.add_argument("--device", default="cpu", choices=sorted(PROFILES),
                   help="where nnUNetv2_train runs; also sets the defaults of --preset, --iterations, "
                        "--source-iterations, --n-test and --n-val")
    s.add_argument("--preset", choices=sorted(PRESETS["unetr"]),
                   help=f"network size (default: {PROFILES['cpu']['preset']} on cpu, {PROFILES['cuda']['preset']} "
                        f"on cuda)")
    s.add_argument("--iterations", type=int, nargs="+",
                   help=f"training iterations per run, every method alike; several budgets give learning curves "
                        f"(default: {PROFILES['cpu']['iterations']} on cpu, {PROFILES['cuda']['iterations']} on cuda)")
    s.add_argument("--source-iterations", type=int,
                   help=f"source pre-training iterations (default: {PROFILES['cpu']['source_iterations']} on cpu, "
                        f"{PROFILES['cuda']['source_iterations']} on cuda)")
    s.add_argument("--n-test", default="-1", help=f"held-out test cases drawn from the labelled cases not trained "
                                                  f"on, or 'all' (default: {PROFILES['cpu']['n_test']} on cpu, all "
                                                  f"on cuda)")
    s.add_argument("--test-cases", nargs="+", help="explicit test case ids, or one text file with an id per line "
                                                   "(default: drawn with --seed)")
    s.add_argument("--train-draws", help="JSON file of explicit draws {\"5\": [[case, ...], ...], ...} "
                                         "(default: drawn with --seed)")
    s.add_argument("--n-source", type=int, default=40,
                   help="target cases that make the source of --source label-shift (never drawn or tested)")
    s.add_argument("--trust-pickle", action="store_true", help=TRUST_HELP.replace("file", "--source checkpoint")
                   + " (passed on to the benchmark's nnUNetv2_train runs as HIPPO_PEFT_TRUST_PICKLE=1)")
    s.add_argument("--n-val", type=int, default=-1,
                   help=f"validation cases, drawn after the test set and never trained on: scored apart, for "
                        f"choosing rates and budgets without looking at the test set; 0: none (default: "
                        + (f"{PROFILES['cpu']['n_val']}" if PROFILES["cpu"]["n_val"] == PROFILES["cuda"]["n_val"]
                           else f"{PROFILES['cpu']['n_val']} on cpu, {PROFILES['cuda']['n_val']} on cuda") + ")")
    s.add_argument("--qc-page", action="store_true", help=QC_PAGE_HELP)
    s.set_defaults(func=_cmd_benchmark)
    s = sub.add_parser("benchmark-report", help="rewrite a benchmark work folder's report from its finished runs "
                                                "(also while a benchmark is still running); trains nothing")
    s.add_argument("workdir", help="a work folder made by hippo-peft benchmark")
    s.add_argument("--qc-page", action="store_true", help=QC_PAGE_HELP)
    s.set_defaults(func=_cmd_benchmark_report)

    for action in sub._choices_actions:  # every command: its defaults shown, its one-line help as description
        command = sub.choices[action.dest]
        command.formatter_class = HelpFormatter
        if command.description is None:
            command.description = textwrap.fill(action.help[0].upper() + action.help[1:] + ".", 80)
    return p


class _StdoutHandler(logging.StreamHandler):
    """Writes each message to the sys.stdout of the moment (a test's capture may replace it between calls)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


def _log_to_stdout() -> None:
    """The library's logging.info messages are the commands' progress output: plain lines on stdout, as print gave.
    Only hippo_peft's loggers; other libraries' warnings go to stderr as Python's default does."""
    log = logging.getLogger("hippo_peft")
    if not any(isinstance(h, _StdoutHandler) for h in log.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _log_to_stdout()
    try:
        status = args.func(args)  # a command that finished with something to look at returns 1 (qc)
    except (HippoPeftError, OSError) as e:  # bad input, a refused file; a path the system cannot read or write
        print(f"hippo-peft {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001 -- a bug of ours: its traceback, and a status no command uses otherwise
        import traceback
        traceback.print_exc()
        print(f"hippo-peft {args.command}: internal error (above); please report it.", file=sys.stderr)
        return 3
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
