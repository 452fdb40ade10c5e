"""The three learners of a scenario, all driven by the same stream and evaluation set.

* ``tybox``  -- the compiled host harness of the generated C++ (int8 feature extractor, ring
  buffer of N_B samples, float classifier trained on the device), run as a subprocess: the
  feature extractor once over every image of the job (``harness extract``), then each stream
  through the library's on-device learning on those int8 features (``harness stream
  --features``; the extractor is frozen, so this is the same computation as streaming the images,
  without extracting an image once per repetition that uses it);
* ``tinyol`` -- the same harness with a buffer of one sample;
* ``float``  -- the trained float model (not pruned, not quantised): ``model.features()`` in torch,
  then the same learning rule (``tinyevo.tybox.reference.OnDeviceLearner``: same loss, lr, buffer
  length N_B, one batch-1 pass over the buffer per new sample, classifier only) in numpy.

Every learner returns the classifier outputs predicted for the evaluation set after every step
(``eval_pred``: (stream_length + 1, eval_size), step 0 = before any training) and the prediction
of each stream sample before training on it (``stream_pred``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tinyevo.export.int8 import quantise

from .setup import Scenario, ScenarioError

LOG = logging.getLogger("tinyevo.scenarios")


def buffer_length(tflite_path, num_outputs: int, ram_bytes: int, accounting: str = "total") -> int:
    """N_B of the deployed model: the TyBox memory model of the int8 feature extractor and a
    ``num_outputs``-way float classifier under the device budget."""
    from tinyevo.tybox.memory import memory_terms
    from tinyevo.tybox.model import load_graph

    if not Path(tflite_path).is_file():
        raise FileNotFoundError(f"int8 feature extractor not found: {tflite_path}")
    g = load_graph(tflite_path)
    F = int(g.feature_size)
    terms = memory_terms(g, (np.zeros((F, num_outputs), np.float32), np.zeros(num_outputs, np.float32)),
                         int(ram_bytes), accounting=accounting)
    n = int(terms["n_samples"])
    if n < 1:
        raise ScenarioError(f"device.ram_bytes = {ram_bytes}: no buffer sample fits next to the model "
                            f"of {tflite_path} ({terms['net_bytes']} B)")
    return n


class HarnessLearner:
    """``tybox`` / ``tinyol`` through the generated host harness (``tinyevo.tybox.harness``)."""

    def __init__(self, project_dir, scenario: Scenario, capacity: int, workdir, tybox: dict | None = None,
                 device: dict | None = None, log: logging.Logger | None = None):
        from tinyevo.tybox import harness

        self.log = log or LOG
        self.harness = harness
        self.scenario = scenario
        self.capacity = int(capacity)
        self.workdir = Path(workdir)
        project = Path(project_dir)
        if not (project / "harness").is_file():
            raise FileNotFoundError(f"compiled TyBox harness not found: {project / 'harness'} (run the tybox stage)")
        info = harness.info(project)
        if scenario.fresh_classifier and info["num_classes"] != scenario.num_outputs:
            project = self._regenerate(project, info, tybox or {}, device or {})
            info = harness.info(project)
        if info["num_classes"] != scenario.num_outputs:
            raise ScenarioError(f"{project}: the generated classifier has {info['num_classes']} outputs, scenario "
                                f"{scenario.name!r} needs {scenario.num_outputs}")
        if self.capacity > int(info["buffer_samples"]):
            raise ScenarioError(f"{project}: buffer capacity {self.capacity} > the generated buffer of "
                                f"{info['buffer_samples']} samples")
        self.project, self.info = project, info
        self.init = None
        if scenario.fresh_classifier:
            F, C = int(info["feature_size"]), int(info["num_classes"])
            self.init = (np.zeros((F, C), np.float32), np.zeros(C, np.float32))

    def _regenerate(self, project: Path, info: dict, tybox: dict, device: dict) -> Path:
        """The transfer model's classifier has a different number of outputs than the generated
        one: generate and build the same C++ with a fresh ``num_outputs``-way classifier."""
        from tinyevo.tybox import codegen

        k = self.scenario.num_outputs
        tfl = project / "fe_int8.tflite"
        out = self.workdir / "tybox_transfer"
        F = int(info["feature_size"])
        self.log.info("generating the C++ of %s with a fresh %d-way classifier into %s", tfl, k, out)
        codegen.generate(tfl, (np.zeros((F, k), np.float32), np.zeros(k, np.float32)), out,
                         M=int(device["ram_bytes"]), accounting=tybox.get("accounting", "total"),
                         lr=float(self.scenario.lr), loss=self.scenario.loss,
                         n_test=int(tybox.get("test_vectors", 8)), seed=int(self.scenario.seed),
                         min_buffer_samples=1, name="transfer")
        self.harness.build(out, tybox.get("cxx", "g++"))
        return out

    def prepare(self, x_norm: np.ndarray) -> np.ndarray:
        """Normalised float images -> the int8 features of the compiled feature extractor
        (``harness extract`` on the quantised images, one call for every image a job uses)."""
        want = (int(self.info["input_h"]), int(self.info["input_w"]), int(self.info["input_c"]))
        if tuple(x_norm.shape[1:]) != want:
            raise ScenarioError(f"{self.project}: the feature extractor takes {want} images, the data has "
                                f"{tuple(x_norm.shape[1:])}")
        q = quantise(x_norm, self.info["input_scale"], self.info["input_zero_point"])
        return self.harness.extract(self.project, q)

    def classifier(self) -> tuple[np.ndarray, np.ndarray, float, int]:
        """(W (F, C), b (C,), feature scale, feature zero point) the on-device learning starts from."""
        if self.init is not None:
            W, b = self.init
        else:
            W, b = self.harness.initial_weights(self.project, workdir=self.workdir)
        return W, b, float(self.info["feature_scale"]), int(self.info["feature_zero_point"])

    def run(self, stream_x, stream_y, eval_x, eval_y, settings=None) -> dict:
        """The evaluation run on the int8 features of :meth:`prepare` through the compiled harness
        with ``settings`` (lr, loss, start of the new-class rows; default the scenario's lr and
        loss, rows as trained)."""
        from .tuning import Settings, initial_classifier

        st = settings or Settings(self.scenario.lr, self.scenario.loss)
        init = self.init
        if st.new_class_init != "keep" and self.scenario.new_classes:
            W, b, _, _ = self.classifier()
            init = initial_classifier(W, b, self.scenario, st.new_class_init)
        res = self.harness.stream(self.project, stream_x, stream_y, eval_x, eval_y, capacity=self.capacity,
                                  lr=st.lr, loss=st.loss, init_weights=init, features=True, workdir=self.workdir)
        curve = res["curve"]
        return {"eval_pred": res["eval_pred"].astype(np.int64),
                "stream_pred": curve["pred"].to_numpy()[1:].astype(np.int64)}


class FloatLearner:
    """``float``: torch features of the trained float model + the numpy on-device learner."""

    def __init__(self, model_path, scenario: Scenario, capacity: int, device: str = "auto"):
        from tinyevo.runtime import pick_device
        from tinyevo.space.torch_model import load_model

        self.scenario = scenario
        self.capacity = int(capacity)
        self.device = pick_device(device)
        model, _, _ = load_model(model_path)
        self.model = model.eval().to(self.device)
        lin = model.classifier
        if scenario.fresh_classifier:
            F = int(lin.in_features)
            C = scenario.num_outputs
            self.W, self.b = np.zeros((F, C), np.float32), np.zeros(C, np.float32)
        else:
            if int(lin.out_features) != scenario.num_outputs:
                raise ScenarioError(f"{model_path}: classifier has {lin.out_features} outputs, scenario "
                                    f"{scenario.name!r} needs {scenario.num_outputs}")
            self.W = lin.weight.detach().cpu().numpy().T.astype(np.float32).copy()
            self.b = lin.bias.detach().cpu().numpy().astype(np.float32).copy()

    def prepare(self, x_norm: np.ndarray, batch: int = 512) -> np.ndarray:
        """Normalised NHWC images -> float32 features (``model.features``)."""
        import torch

        outs = []
        with torch.no_grad():
            for s in range(0, len(x_norm), batch):
                t = torch.from_numpy(np.ascontiguousarray(x_norm[s:s + batch].transpose(0, 3, 1, 2)))
                outs.append(self.model.features(t.to(self.device)).float().cpu().numpy())
        F = self.W.shape[0]
        return np.concatenate(outs) if outs else np.zeros((0, F), np.float32)

    def classifier(self) -> tuple[np.ndarray, np.ndarray, float, int]:
        return self.W, self.b, 1.0, 0

    def run(self, stream_x, stream_y, eval_x, eval_y, settings=None) -> dict:
        from tinyevo.tybox.reference import OnDeviceLearner, run_stream

        from .tuning import Settings, initial_classifier

        st = settings or Settings(self.scenario.lr, self.scenario.loss)
        W, b = initial_classifier(self.W, self.b, self.scenario, st.new_class_init)
        learner = OnDeviceLearner(W, b, 1.0, 0, capacity=self.capacity, lr=st.lr, loss=st.loss)
        res = run_stream(learner, stream_x, stream_y, eval_x, eval_y)
        return {"eval_pred": res["eval_pred"].astype(np.int64),
                "stream_pred": res["curve"]["pred"].to_numpy()[1:].astype(np.int64)}
