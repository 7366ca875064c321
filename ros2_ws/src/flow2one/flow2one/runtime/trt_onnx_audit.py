"""Does an exported model.onnx use only what TensorRT's ONNX parser supports? Checked without TensorRT.

A model that the parser rejects fails on the robot PC at the first engine build, minutes into a run;
this audit runs in CI on every shipped and exported model instead.
"""

from __future__ import annotations

from pathlib import Path

# Source: onnx/onnx-tensorrt docs/operators.md at the "ONNX-TensorRT 10.1 GA release" commit (96e7811), the
# rows marked "Y" (TensorRT 10.0+: opsets 9 to 20). TensorRT 11 supports a superset of these for our purposes.
TRT_SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike Ceil
Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements
GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
GroupNormalization GRU HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN
LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max
MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range
Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements
ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt
Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())
OPSET_RANGE = (9, 20)  # same source: "operators in the inclusive range of opset 9 to opset 20"
# Same source, "Restrictions" column: these inputs must be initializers (or Constant outputs). ReduceX take
# axes as input 1 from opset 18 on (an attribute before), Slice as input 3, (Un)Squeeze as input 1.
CONST_INPUTS = {"Slice": 3, "Squeeze": 1, "Unsqueeze": 1, "ReduceMax": 1, "ReduceMin": 1, "ReduceProd": 1,
                "ReduceL1": 1, "ReduceL2": 1, "ReduceLogSum": 1, "ReduceLogSumExp": 1, "ReduceSumSquare": 1}
FIRST_OUTPUT_ONLY = ("LayerNormalization",)  # "Only the first output `Y` is supported"


def audit_onnx(path: str | Path) -> list[str]:
    """Problems TensorRT's ONNX parser would hit in this model (empty: none found)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    problems: list[str] = []
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and not OPSET_RANGE[0] <= imp.version <= OPSET_RANGE[1]:
            problems.append(f"opset {imp.version} is outside TensorRT's {OPSET_RANGE[0]}..{OPSET_RANGE[1]}")
    graphs = [model.graph]
    consts: set[str] = set()
    used: set[str] = {o.name for o in model.graph.output}
    while graphs:  # subgraphs of If/Loop/Scan are parsed too
        g = graphs.pop()
        consts |= {i.name for i in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
        used |= {i for n in g.node for i in n.input}
        graphs += [a.g for n in g.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]
    graphs = [model.graph]
    while graphs:
        g = graphs.pop()
        for n in g.node:
            where = f"{n.op_type} node {n.name!r}"
            if n.domain not in ("", "ai.onnx"):
                problems.append(f"{where}: custom domain {n.domain!r} (needs a TensorRT plugin)")
            elif n.op_type not in TRT_SUPPORTED_OPS:
                problems.append(f"{where}: operator not supported by TensorRT's ONNX parser")
            k = CONST_INPUTS.get(n.op_type)
            if k is not None and len(n.input) > k and n.input[k] and n.input[k] not in consts:
                problems.append(f"{where}: input {k} ({n.input[k]!r}) must be an initializer for TensorRT")
            if n.op_type in FIRST_OUTPUT_ONLY and any(o in used for o in n.output[1:]):
                problems.append(f"{where}: only its first output is supported by TensorRT")
            graphs += [a.g for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]
    return problems
