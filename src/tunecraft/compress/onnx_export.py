"""ONNX export (torch.onnx, dynamo exporter) with a logits-equivalence check against PyTorch, ONNX Runtime
inference, and ORT int8 quantization: dynamic, or static calibrated on training samples."""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from ..data.dataset import Encoded, collate
from ..errors import TunecraftError
from ..models import TrainedModel
from .settings import OnnxSettings
from .variant import write_variant

FORMAT = "onnx"
WEIGHTS = "model.onnx"


class OrtModel:
    """An ONNX Runtime session that answers like a transformers model: model(**batch).logits."""

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def eval(self):
        return self

    def __call__(self, **batch):
        feed = {name: batch[name].cpu().numpy().astype(np.int64) for name in self.inputs}
        return SimpleNamespace(logits=torch.from_numpy(self.session.run(["logits"], feed)[0]))


def load(folder: Path, meta: dict) -> OrtModel:
    return OrtModel(folder / WEIGHTS)


def _batch(enc: Encoded, indices: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    batch = collate(enc, indices, pad_id)
    batch.pop("labels", None)
    return batch


def export_fp32(model: torch.nn.Module, example: dict[str, torch.Tensor], path: Path) -> None:
    """torch.onnx.export with the dynamo exporter (torch ≥ 2.9's default), batch and sequence dynamic."""
    from torch.export import Dim

    batch, seq = Dim("batch"), Dim("sequence")
    names = list(example)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # exporter chatter (torchvision absent, dynamic-shape renames)
        torch.onnx.export(model.float().eval(), (), str(path), kwargs=example, input_names=names,
                          output_names=["logits"], dynamic_shapes={n: {0: batch, 1: seq} for n in names},
                          dynamo=True, optimize=True, external_data=False, verbose=False)


def compare_logits(model: torch.nn.Module, ort_model: OrtModel, enc: Encoded, pad_id: int,
                   batch_size: int = 32) -> float:
    """The largest |logit difference| between PyTorch fp32 and ONNX Runtime over `enc`, in padded batches."""
    worst = 0.0
    model = model.float().eval()
    for start in range(0, len(enc), batch_size):
        batch = _batch(enc, list(range(start, min(start + batch_size, len(enc)))), pad_id)
        with torch.no_grad():
            expected = model(**batch).logits.float()
        worst = max(worst, float((ort_model(**batch).logits - expected).abs().max()))
    return worst


def _calibration_reader(enc: Encoded, pad_id: int, names: list[str]):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        """One example per call, unpadded, as served at batch 1."""

        def __init__(self):
            self.items = iter(range(len(enc)))

        def get_next(self):
            i = next(self.items, None)
            if i is None:
                return None
            batch = _batch(enc, [i], pad_id)
            return {n: batch[n].numpy().astype(np.int64) for n in names}

    return Reader()


def make(source: TrainedModel, target: Path, settings: OnnxSettings, check_enc: Encoded,
         calibration_enc: Encoded | None = None, overwrite: bool = False, cache: Path | None = None) -> dict:
    """Export `source` to ONNX; fp32 must match PyTorch within `tolerance` on `check_enc` (else an error);
    int8 variants record their (larger, expected) difference instead. `cache`: a folder where the fp32
    export of this source is kept for the next variant (the export takes tens of seconds)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pad_id = source.pad_id
    result: dict = {}

    def write(tmp: Path) -> dict:
        work = Path(tempfile.mkdtemp(prefix="tunecraft-onnx-"))
        try:
            fp32 = work / "fp32.onnx"
            example = _batch(check_enc, list(range(min(2, len(check_enc)))), pad_id)
            cached = cache / "fp32.onnx" if cache else None
            if cached and cached.is_file():
                shutil.copy(cached, fp32)
            else:
                export_fp32(copy_of(source.model), example, fp32)
                if cached:
                    cache.mkdir(parents=True, exist_ok=True)
                    shutil.copy(fp32, cached)
            if settings.quantize == "none":
                shutil.move(fp32, tmp / WEIGHTS)
            else:
                pre = work / "pre.onnx"
                # symbolic shape inference cannot finish on the dynamo graph; ONNX shape inference suffices
                quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
                if settings.quantize == "dynamic":
                    quantize_dynamic(str(pre), str(tmp / WEIGHTS), weight_type=QuantType.QInt8, per_channel=True)
                else:
                    if calibration_enc is None or not len(calibration_enc):
                        raise TunecraftError("static int8 needs calibration examples (the run's training data)")
                    names = list(example)
                    quantize_static(str(pre), str(tmp / WEIGHTS), _calibration_reader(calibration_enc, pad_id, names),
                                    quant_format=QuantFormat.QDQ, per_channel=True,
                                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                    calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=["MatMul", "Gemm"])
        finally:
            shutil.rmtree(work, ignore_errors=True)
        diff = compare_logits(source.model, OrtModel(tmp / WEIGHTS), check_enc, pad_id)
        result.update(max_abs_logit_diff=diff, check_examples=len(check_enc))
        if settings.quantize == "none" and diff > settings.tolerance:
            raise TunecraftError(f"ONNX export of {source.path}: logits differ from PyTorch by {diff:.2e} "
                                 f"(tolerance {settings.tolerance:.0e}) on {len(check_enc)} examples")
        info = {"runtime": "onnxruntime (CPUExecutionProvider)", "quantize": settings.quantize,
                "max_abs_logit_diff_vs_pytorch": diff, "check_examples": len(check_enc)}
        if settings.quantize == "none":
            info["tolerance"] = settings.tolerance
        if settings.quantize == "static":
            info["calibration_samples"] = len(calibration_enc)
        return {"onnx": info}

    write_variant(target, source, FORMAT, write, overwrite)
    return result


def copy_of(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model)
