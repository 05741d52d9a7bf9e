"""Every artifact file name distill writes or reads, grouped by the folder it lives in.
"""
from __future__ import annotations

# ------------------------------------------------------------------ artifact file names
# A run folder (distill train / distill adapt)
RUN_CONFIG = "config.yaml"             # the resolved TrainConfig the run was started with
RUN_SUMMARY = "summary.json"           # RunSummary, written when the run ends
RUN_FINISHED = "finished_at.json"      # {"finished_at": UTC ISO 8601}: RunSummary.finished_at, beside summary.json
RUN_METRICS = "metrics.csv"            # one row per epoch (accuracies as fractions)
RUN_DATA = "data.json"                 # RunData: the data and teacher targets the run started on (resume compares)
RUN_LAUNCH = "launch.json"             # RunLaunch: how many ranks the run trains on (resume compares; report groups)
ROBUST_REPORT = "robust.json"          # RobustReport of the selected checkpoint (config `robust`)
RUN_TENSORBOARD = "tb"                 # RUN/tb: TensorBoard event files of a training run
CHECKPOINTS_DIR = "checkpoints"        # checkpoints/<step>/, checkpoints/best/, checkpoints/last.json
CHECKPOINT_POINTER = "last.json"       # CheckpointPointer: which checkpoints/<dir> is the newest complete one
TRAIN_STATE = "train_state.json"       # optimizer/scheduler/RNG step state inside a checkpoint
BEST_CHECKPOINT = "best"               # checkpoints/best: the selected student
# A student checkpoint folder
STUDENT_SPEC = "student.json"          # StudentSpec
STUDENT_WEIGHTS = "model.safetensors"
# A teacher cache folder (each companion folder has its own CACHE_BUILD_PLAN and CACHE_MANIFEST)
CACHE_MANIFEST = "manifest.json"       # CacheManifest (AdversarialManifest in CACHE/adversarial); written last
CACHE_BUILD_PLAN = "build.json"        # the plan, written when a build starts (resume checks it)
TEXT_EMBEDDINGS = "text_embeddings.safetensors"
CACHE_ADVERSARIAL_DIR = "adversarial"  # adversarial views crafted against the teacher
CACHE_PIXELS_PREFIX = "pixels-"        # pixels-HxW-INTERP: a pixel store at the student's size
# A bootstrapped stand-in teacher folder
TEACHER_MANIFEST = "teacher.json"      # TeacherManifest; written last
TEACHER_CHECKPOINT = "open_clip_model.safetensors"
TEACHER_BOOTSTRAP_STATE = "bootstrap-state.safetensors"  # while it trains
# A materialized built-in data suite (the class map is also what any dataset root may hold)
DATA_CLASS_MAP = "classnames.yaml"
SUITE_INFO = "suite.json"              # SuiteInfo: provenance; written last: its presence means complete
SUITE_INDEX = "index.csv"
# An export folder
EXPORT_REPORT = "export.json"          # ExportReport
EXPORT_CHECKPOINT = "checkpoint"       # OUT/checkpoint/: the re-targeted student of `distill export --classes`
EXPORT_MOVE_MARKER = ".distill-export.json"  # in OUT/checkpoint/ from its move in until export.json is written
QAD_REPORT = "qad.json"                # QADRecord (distill/records/qad.py): `distill qad`'s PTQ vs QAD figures
QAD_ENGINE = "model.int8-qad.engine"   # what a tensorrt-flavour qad folder's build_engine.sh builds (not the export's)
# `distill export --format timm`: timm's Hugging Face layout, as timm.models.save_for_hf names it
TIMM_WEIGHTS = "model.safetensors"     # timm's key names (no backbone./head. prefixes)
TIMM_CONFIG = "config.json"            # architecture, num_classes, label_names, pretrained_cfg (preprocessing)
# Benchmarks, report and demo
BENCH_RECORDS = "bench.jsonl"          # one BenchRecord per line
REPORT_HTML = "report.html"
REPORT_MD = "report.md"
DEMO_RESULTS = "results.md"            # distill demo: its printed accuracy tables, as written to OUT/
