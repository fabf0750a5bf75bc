#!/usr/bin/env python3
"""Make small reference CNNs in ONNX and Keras 3 form, with their expected logits on real X-rays.

What it makes (in fixtures/import/ unless --out says otherwise), for the `cxrm import` tests:

  ONNX, built in PyTorch and written by torch.onnx.export:
    xception_op13.onnx     Xception-style net, 3x150x150, opset 13, TorchScript exporter with
                           training=PRESERVE: BatchNormalization nodes kept, bias-less Conv nodes
                           (one pointwise Conv has a bias), MaxPool 3x3/2 pad 1, Add, GlobalAveragePool,
                           Flatten, Gemm. Output: logits, no Softmax.
    mobilenetv2_op13.onnx  MobileNetV2-style net, 3x224x224, opset 13, TorchScript exporter in eval
                           mode: BatchNorm folded into the Conv nodes (all Conv have a bias), ReLU6 as
                           Clip(min, max inputs), grouped (depthwise) Conv, Add, GlobalAveragePool, Gemm.
    mobilenetv2_op18.onnx  The same torch model (same weights) exported at opset 18 by the dynamo
                           exporter (torch.export, IR 10): BatchNorm folded by its optimizer, Clip with
                           initializer bounds, global pooling as ReduceMean (axes as an input, opset
                           18) + Reshape instead of GlobalAveragePool + Flatten, value_info present.
    vgg_op13.onnx          VGG-style net, 3x224x224, opset 13: Conv (with bias) + Relu pairs, MaxPool 2x2,
                           Flatten, Gemm, Relu, Dropout, Gemm. The Dropout node (inference: identity)
                           is inserted after export, since torch drops it from eval-mode graphs.
    resnet_stem_op13.onnx  ResNet50-style stem + one basic residual block, 3x96x96, opset 13, TorchScript
                           exporter in eval mode (BatchNorm folded into Conv): Conv 7x7/2 pads 3, Relu,
                           then a Pad node (constant 0, pads 1) feeding MaxPool 3x3/2 with no padding
                           of its own (torch ZeroPad2d(1) + MaxPool2d(3, 2)), Conv 3x3, Add, Relu,
                           GlobalAveragePool, Flatten, Gemm.
    se_mix_op17.onnx       MobileNetV3/EfficientNet-style ops, 3x96x96, opset 17, TorchScript exporter in
                           eval mode (BatchNorm folded into Conv): Conv 3x3/2 + HardSwish (a native op
                           since opset 14), depthwise Conv 3x3 + SiLU (written as Sigmoid + Mul), a
                           squeeze-excite block (GlobalAveragePool, Conv 1x1, Relu, Conv 1x1, Sigmoid,
                           Mul of [N,16,48,48] by [N,16,1,1] with broadcasting), pointwise Conv (linear),
                           GlobalAveragePool, Flatten, Gemm.
    inception_mix_op13.onnx Inception-style block, 3x96x96, opset 13, TorchScript exporter in eval mode
                           (BatchNorm folded into Conv): Conv 3x3/2 + Relu stem, three branches (Conv
                           1x1 + Relu; Conv 1x1 + Relu, Conv 3x3 + Relu; MaxPool 3x3 stride 1 pads 1,
                           Conv 1x1 + Relu) joined by a Concat (axis 1) of 4-D activations into 16
                           channels, then GlobalAveragePool + Flatten of the block and of the stem
                           output, a Concat (axis 1) of the two 2-D vectors [N,16] and [N,8], Gemm.
    opset_mix_op11.onnx    The common operators at the low end of the opset range, 3x96x96, opset 11,
                           TorchScript exporter with training=PRESERVE: Conv + BatchNormalization + Relu
                           stem, Conv + Clip(0, 6) (bounds as Constant inputs) branch, Add,
                           BatchNormalization of the sum, Relu, MaxPool 3x3/2 pads 1, AveragePool 3x3/1
                           pads 1 count_include_pad=1 (torch's default), AveragePool 3x3/2 pads 1
                           count_include_pad=0, Conv 1x1 + Relu, GlobalAveragePool, Flatten, Gemm.
    opset_mix_op21.onnx    The same torch model and weights at opset 21, dynamo exporter: the stem's
                           BatchNorm folded into its Conv (the one after the Add stays), Clip with
                           initializer bounds, the same pooling nodes, GlobalAveragePool (the exporter's
                           custom_translation_table maps adaptive_avg_pool2d to it; by default it writes
                           ReduceMean, as in mobilenetv2_op18.onnx), Reshape (allowzero=1), Gemm.
    Every ONNX input is "input" [batch, 3, H, W] (batch is a symbolic dim), output "logits" [batch, 2].

  Keras 3 (model.save, the .keras zip), each with its own random weights (not the torch ones):
    xception.keras         Rescaling(1/127.5, offset=-1) inside the model, Conv2D stride 2
                           padding="same" (150 -> 75: TF's asymmetric same padding), SeparableConv2D
                           (one with use_bias=True), BatchNormalization, MaxPooling2D 3/2 "same", Add,
                           GlobalAveragePooling2D, Dense(2) logits.
    xception_softmax.keras The same model and weights, but Dense(2, activation="softmax"): its
                           expected outputs are probabilities, not logits.
    mobilenetv2.keras      Rescaling(1/255) + Normalization(ImageNet mean/variance, in the config)
                           inside the model, ReLU(max_value=6), DepthwiseConv2D, ZeroPadding2D
                           ((0,1),(0,1)) before each strided depthwise conv (padding="valid"), Add, a
                           nested Functional model ("ir_block_nested") used as a layer, Dropout.
    vgg.keras              Conv2D(activation="relu") fused, MaxPooling2D 2x2, Flatten (NHWC order),
                           Dense(64, activation="relu"), Dropout, Dense(2). No scaling layer: the
                           caller divides by 255 (recorded as "scale" in the expected JSON).
    resnet_stem.keras      ResNet50's stem as keras.applications writes it: Rescaling(1/255),
                           ZeroPadding2D(3) + Conv2D(8, 7, strides=2, "valid", no bias), BN, ReLU,
                           ZeroPadding2D(1) + MaxPooling2D(3, strides=2, "valid") (96 -> 48 -> 24),
                           then a basic residual block (Conv2D 3x3 "same" + BN + ReLU, Conv2D + BN,
                           Add with the block input, ReLU), GlobalAveragePooling2D, Dense(2) logits.
    se_mix.keras           MobileNetV3/EfficientNet-style ops: Rescaling(1/127.5, offset=-1), Conv2D
                           3x3/2 "same" (96 -> 48, pads 0 before, 1 after) + BN + Activation("hard_swish")
                           (saved as "hard_silu"), DepthwiseConv2D 3x3 + BN + Activation("swish") (saved
                           as "silu"), squeeze-excite (GlobalAveragePooling2D(keepdims=True), Conv2D 1x1
                           activation="relu", Conv2D 1x1 activation="sigmoid", Multiply broadcasting
                           [N,1,1,16] over [N,48,48,16]), Conv2D 1x1 + BN (linear), GAP, Dense(2) logits.
    inception_mix.keras    Inception-style block: Rescaling(1/127.5, offset=-1), Conv2D 3x3/2 "same" + BN
                           + ReLU stem, three branches (Conv2D 1x1 + BN + ReLU; Conv2D 1x1 relu, Conv2D
                           3x3 "same" + BN + ReLU; MaxPooling2D(3, strides=1, "same"), Conv2D 1x1 relu),
                           Concatenate(axis=-1) of the branches (16 channels), GlobalAveragePooling2D of
                           the block and of the stem, Concatenate(axis=-1) of the two vectors (16 + 8),
                           Dense(2) logits.

  For each model file F: F.expected.json with the outputs on the 16 chest X-rays of
  chest-xray-val/ (paths relative to the shared data folder) and the exact preprocessing.
  input.{bilinear,nearest}HxW.npy: the first image (its path is in the JSON's input_sample) after
  decode and resize, uint8 [H, W, 3] RGB, before any arithmetic: lossless and small, it separates
  a decode/resize mismatch from a model mismatch.

Preprocessing, each framework's own:
  Keras: keras.utils.load_img(path, color_mode="rgb", target_size=(H, W), interpolation="nearest"),
         keras.utils.img_to_array (float32 0..255, HWC), times "scale" (1.0 unless stated), batch NHWC.
  ONNX:  PIL.Image.open(path).convert("RGB").resize((W, H), Image.BILINEAR) (Pillow's bilinear
         filter widens with the downscale factor: an area-weighted triangle filter, not 2x2
         interpolation), float /255, (x - mean) / std per channel with the ImageNet mean/std, NCHW.
         onnxruntime (CPUExecutionProvider) gives "logits"; PyTorch's own output on the same tensor is
         kept as "torch_logits", and the largest |torch - onnxruntime| as max_abs_diff_torch_vs_ort.

Packages (pip, in a venv; the CPU wheel index of PyTorch was not reachable, so plain PyPI):
  torch==2.15.0 onnx==1.23.2 onnxscript==0.7.2 onnxruntime==1.32.0 keras==3.15.1
  pillow==13.0.0 h5py==3.16.0 numpy==2.4.6   (Keras runs on its torch backend: KERAS_BACKEND=torch)

Run:
  python3 -m venv /tmp/refenv && /tmp/refenv/bin/pip install torch onnx onnxscript onnxruntime \
      keras pillow h5py numpy
  /tmp/refenv/bin/python tools/make_reference_models.py [--data ../shared/data] [--out fixtures/import] \
      [--only FILE...]
  --only makes just the named model files (and their expected JSON and input sample); every model
  has its own seed, so the files it leaves alone are the ones a full run would write.

Deterministic for a given --seed (default 0): weights come from seeded generators, inference runs
on one thread, the .keras zips are rewritten with fixed timestamps (zip entries and metadata.json's
date_saved) and config.json's shared_object_id values (Python object ids) renumbered 1, 2, ...,
so a rerun with the same package versions writes byte-identical files.

The weights are random but not degenerate: He-normal kernels, random biases and BatchNorm
gamma/beta, and BatchNorm running statistics measured on the 16 preprocessed images (one
training-mode pass) and then perturbed, as in a trained net. So activations stay near unit scale,
the outputs differ from image to image (standard deviation 0.07 to 0.6 over the 16 images, against
~1e-6 between torch and onnxruntime), and an importer that drops or misorders any tensor, or
preprocesses differently, changes them.
"""
import argparse
import functools
import io
import json
import os
import sys
import warnings
import zipfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("OMP_NUM_THREADS", "1")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import onnx  # noqa: E402
import onnxscript  # noqa: E402
import onnxruntime as ort  # noqa: E402
import keras  # noqa: E402
from keras import layers  # noqa: E402
import PIL  # noqa: E402
from PIL import Image  # noqa: E402
import h5py  # noqa: E402

torch.set_num_threads(1)

CLASSES = ["NORMAL", "PNEUMONIA"]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
FIXED_DATE = "2024-01-01@00:00:00"


def versions():
    return {
        "python": sys.version.split()[0], "torch": torch.__version__.split("+")[0],
        "onnx": onnx.__version__, "onnxruntime": ort.__version__, "keras": keras.__version__,
        "keras_backend": keras.backend.backend(), "pillow": PIL.__version__,
        "h5py": h5py.__version__, "numpy": np.__version__,
    }


# ----------------------------------------------------------------------------- torch models

class SepConv(nn.Module):
    """Keras SeparableConv2D: depthwise 3x3 (no bias) then pointwise 1x1."""

    def __init__(self, cin, cout, bias=False):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=bias)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class XBlock(nn.Module):
    def __init__(self, cin, cout, pre_relu, sep2_bias):
        super().__init__()
        self.pre = nn.ReLU() if pre_relu else nn.Identity()
        self.sep1, self.bn1, self.relu1 = SepConv(cin, cout), nn.BatchNorm2d(cout), nn.ReLU()
        self.sep2, self.bn2 = SepConv(cout, cout, bias=sep2_bias), nn.BatchNorm2d(cout)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1, stride=2, bias=False)
        self.skip_bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        r = self.skip_bn(self.skip(x))
        y = self.relu1(self.bn1(self.sep1(self.pre(x))))
        y = self.pool(self.bn2(self.sep2(y)))
        return y + r


class XceptionMini(nn.Module):
    def __init__(self):
        super().__init__()
        self.entry = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block1 = XBlock(16, 32, pre_relu=False, sep2_bias=True)
        self.block2 = XBlock(32, 64, pre_relu=True, sep2_bias=False)
        self.exit = nn.Sequential(SepConv(64, 96), nn.BatchNorm2d(96), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(96, 2)

    def forward(self, x):
        x = self.exit(self.block2(self.block1(self.entry(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        mods = []
        if expand != 1:
            mods += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        mods += [nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
                 nn.BatchNorm2d(hidden), nn.ReLU6(),
                 nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*mods)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2Mini(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6()),
            InvertedResidual(16, 16, 1, 1),   # residual, no expansion
            InvertedResidual(16, 24, 2, 4),   # strided
            InvertedResidual(24, 24, 1, 4),   # residual
            InvertedResidual(24, 32, 2, 4),   # strided
            InvertedResidual(32, 32, 1, 4),   # residual
            nn.Sequential(nn.Conv2d(32, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU6()))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, 2))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class VGGMini(nn.Module):
    def __init__(self):
        super().__init__()
        cfg = [8, 8, "M", 16, 16, "M", 32, 32, "M", 32, "M", 32, "M"]
        mods, c = [], 3
        for v in cfg:
            if v == "M":
                mods.append(nn.MaxPool2d(2, 2))
            else:
                mods += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
                c = v
        self.features = nn.Sequential(*mods)
        self.classifier = nn.Sequential(nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 2))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class ResNetStem(nn.Module):
    """ResNet's stem (7x7/2 conv, BN, ReLU, 3x3/2 max pool) and one basic block, 8 channels. The
    pool's padding is a separate ZeroPad2d, so the ONNX graph has a Pad node feeding MaxPool."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 7, stride=2, padding=3, bias=False)
        self.bn1, self.relu = nn.BatchNorm2d(8), nn.ReLU()
        self.pad = nn.ZeroPad2d(1)
        self.maxpool = nn.MaxPool2d(3, stride=2)
        self.block_conv1, self.block_bn1 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.block_relu1 = nn.ReLU()
        self.block_conv2, self.block_bn2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.block_relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = self.maxpool(self.pad(self.relu(self.bn1(self.conv1(x)))))
        y = self.block_relu1(self.block_bn1(self.block_conv1(x)))
        y = self.block_relu2(self.block_bn2(self.block_conv2(y)) + x)
        return self.fc(torch.flatten(self.pool(y), 1))


class SEMix(nn.Module):
    """MobileNetV3/EfficientNet-style ops: hard-swish stem, depthwise conv + SiLU, squeeze-excite
    (global pool, 1x1 conv, ReLU, 1x1 conv, sigmoid, channel-wise product), linear 1x1 projection."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16),
                                  nn.Hardswish())                                          # 96 -> 48
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16),
                                nn.SiLU())
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(16, 4, 1), nn.ReLU(),
                                nn.Conv2d(4, 16, 1), nn.Sigmoid())
        self.project = nn.Sequential(nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = self.dw(self.stem(x))
        x = self.project(x * self.se(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class InceptionMix(nn.Module):
    """An Inception-style block between a strided stem and the head: three parallel branches (1x1
    conv; 1x1 conv then 3x3 conv; 3x3/1 max pool then 1x1 conv) concatenated along channels, then
    the pooled block output (16) concatenated with a pooled copy of the stem output (8)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU())                                               # 96 -> 48
        self.branch_a = nn.Sequential(nn.Conv2d(8, 6, 1, bias=False), nn.BatchNorm2d(6), nn.ReLU())
        self.branch_b = nn.Sequential(nn.Conv2d(8, 4, 1), nn.ReLU(),
                                      nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU())
        self.branch_c = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(8, 4, 1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16 + 8, 2)

    def forward(self, x):
        s = self.stem(x)
        b = torch.cat([self.branch_a(s), self.branch_b(s), self.branch_c(s)], dim=1)     # [N,16,48,48]
        v = torch.cat([torch.flatten(self.pool(b), 1), torch.flatten(self.pool(s), 1)], dim=1)  # [N,24]
        return self.fc(v)


class OpsetMix(nn.Module):
    """The common CNN operators in one small net, exported at the ends of the opset range the
    importer is tested at (11 and 21): Conv + BatchNorm + ReLU stem, a Conv + ReLU6 (Clip)
    branch added to it, a BatchNorm of the sum (no Conv before it to fold into), max pooling,
    average pooling that counts the padding (torch's default, count_include_pad=1) and one that
    does not, a 1x1 Conv, global average pooling, flatten, Linear (Gemm)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU())                                               # 96 -> 48
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU6())
        self.bn_sum, self.relu = nn.BatchNorm2d(8), nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)                                # 48 -> 24
        self.avgpool_with_pad = nn.AvgPool2d(3, stride=1, padding=1)                       # 24 -> 24
        self.avgpool_without_pad = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)  # -> 12
        self.expand = nn.Sequential(nn.Conv2d(8, 16, 1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        s = self.stem(x)
        x = self.relu(self.bn_sum(s + self.branch(s)))
        x = self.avgpool_without_pad(self.avgpool_with_pad(self.maxpool(x)))
        return self.fc(torch.flatten(self.pool(self.expand(x)), 1))


def randomize_torch(model, seed, batch):
    """Random weights that carry the input through: He-normal kernels, random biases and BN affine
    parameters, and BN running statistics measured on `batch` (the preprocessed X-rays) then
    perturbed, as in a trained net whose BN layers keep activations near zero mean, unit variance.
    (Default init would leave BN as the identity and the logits nearly constant over the images.)"""
    g = torch.Generator().manual_seed(seed + 1000)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(0.05 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.6 + 0.8 * torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
        for m in bns:
            m.reset_running_stats()
            m.momentum = None          # cumulative average: one pass sets the batch statistics
        model.train()(torch.from_numpy(batch))
        for m in bns:
            m.momentum = 0.1
            m.running_mean.add_(0.1 * torch.randn(m.num_features, generator=g) * m.running_var.sqrt())
            m.running_var.mul_(torch.exp(0.2 * torch.randn(m.num_features, generator=g)))
    return model.eval()


# ----------------------------------------------------------------------------- keras models

def k_xception(softmax=False):
    inp = keras.Input((150, 150, 3), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescaling")(inp)
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="entry_conv1")(x)
    x = layers.BatchNormalization(name="entry_bn1")(x)
    x = layers.Activation("relu", name="entry_relu1")(x)
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="entry_conv2")(x)
    x = layers.BatchNormalization(name="entry_bn2")(x)
    x = layers.Activation("relu", name="entry_relu2")(x)

    def block(x, cout, pre_relu, sep2_bias, n):
        r = layers.Conv2D(cout, 1, strides=2, padding="same", use_bias=False, name=f"block{n}_skip")(x)
        r = layers.BatchNormalization(name=f"block{n}_skip_bn")(r)
        y = layers.Activation("relu", name=f"block{n}_pre_relu")(x) if pre_relu else x
        y = layers.SeparableConv2D(cout, 3, padding="same", use_bias=False, name=f"block{n}_sep1")(y)
        y = layers.BatchNormalization(name=f"block{n}_sep1_bn")(y)
        y = layers.Activation("relu", name=f"block{n}_sep1_relu")(y)
        y = layers.SeparableConv2D(cout, 3, padding="same", use_bias=sep2_bias, name=f"block{n}_sep2")(y)
        y = layers.BatchNormalization(name=f"block{n}_sep2_bn")(y)
        y = layers.MaxPooling2D(3, strides=2, padding="same", name=f"block{n}_pool")(y)
        return layers.Add(name=f"block{n}_add")([y, r])

    x = block(x, 32, False, True, 1)   # 75 -> 38
    x = block(x, 64, True, False, 2)   # 38 -> 19 (pool pads 0 before, 1 after)
    x = layers.SeparableConv2D(96, 3, padding="same", use_bias=False, name="exit_sep")(x)
    x = layers.BatchNormalization(name="exit_bn")(x)
    x = layers.Activation("relu", name="exit_relu")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    out = layers.Dense(2, activation="softmax" if softmax else None, name="predictions" if softmax else "logits")(x)
    return keras.Model(inp, out, name="xception_mini_softmax" if softmax else "xception_mini")


def k_inverted_residual(x, cout, stride, expand, n):
    cin = x.shape[-1]
    hidden = cin * expand
    y = x
    if expand != 1:
        y = layers.Conv2D(hidden, 1, use_bias=False, name=f"ir{n}_expand")(y)
        y = layers.BatchNormalization(name=f"ir{n}_expand_bn")(y)
        y = layers.ReLU(6.0, name=f"ir{n}_expand_relu6")(y)
    if stride == 2:
        # as keras.applications.MobileNetV2: pad (0,1),(0,1) for an even size, then "valid"
        y = layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"ir{n}_pad")(y)
    y = layers.DepthwiseConv2D(3, strides=stride, padding="same" if stride == 1 else "valid",
                               use_bias=False, name=f"ir{n}_depthwise")(y)
    y = layers.BatchNormalization(name=f"ir{n}_depthwise_bn")(y)
    y = layers.ReLU(6.0, name=f"ir{n}_depthwise_relu6")(y)
    y = layers.Conv2D(cout, 1, use_bias=False, name=f"ir{n}_project")(y)
    y = layers.BatchNormalization(name=f"ir{n}_project_bn")(y)
    if stride == 1 and cin == cout:
        y = layers.Add(name=f"ir{n}_add")([x, y])
    return y


def k_mobilenetv2():
    inp = keras.Input((224, 224, 3), name="image")
    x = layers.Rescaling(1.0 / 255, name="rescaling")(inp)
    x = layers.Normalization(mean=IMAGENET_MEAN, variance=[s * s for s in IMAGENET_STD], name="normalization")(x)
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu6")(x)
    x = k_inverted_residual(x, 16, 1, 1, 1)
    x = k_inverted_residual(x, 24, 2, 4, 2)
    # the third block is a Functional model of its own, used as a layer of the outer one
    sub_in = keras.Input((56, 56, 24), name="ir_block_nested_input")
    sub = keras.Model(sub_in, k_inverted_residual(sub_in, 24, 1, 4, 3), name="ir_block_nested")
    x = sub(x)
    x = k_inverted_residual(x, 32, 2, 4, 4)
    x = k_inverted_residual(x, 32, 1, 4, 5)
    x = layers.Conv2D(64, 1, use_bias=False, name="head_conv")(x)
    x = layers.BatchNormalization(name="head_bn")(x)
    x = layers.ReLU(6.0, name="head_relu6")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    out = layers.Dense(2, name="logits")(x)
    return keras.Model(inp, out, name="mobilenetv2_mini")


def k_vgg():
    inp = keras.Input((224, 224, 3), name="image")
    x, n = inp, 0
    for v in [8, 8, "M", 16, 16, "M", 32, 32, "M", 32, "M", 32, "M"]:
        n += 1
        if v == "M":
            x = layers.MaxPooling2D(2, name=f"pool{n}")(x)
        else:
            x = layers.Conv2D(v, 3, padding="same", activation="relu", name=f"conv{n}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64, activation="relu", name="fc1")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    out = layers.Dense(2, name="logits")(x)
    return keras.Model(inp, out, name="vgg_mini")


def k_resnet_stem():
    inp = keras.Input((96, 96, 3), name="image")
    x = layers.Rescaling(1.0 / 255, name="rescaling")(inp)
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = layers.Conv2D(8, 7, strides=2, padding="valid", use_bias=False, name="conv1_conv")(x)   # 102 -> 48
    x = layers.BatchNormalization(name="conv1_bn")(x)
    x = layers.ReLU(name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="valid", name="pool1_pool")(x)                # 50 -> 24
    y = layers.Conv2D(8, 3, padding="same", use_bias=False, name="block1_conv1")(x)
    y = layers.BatchNormalization(name="block1_bn1")(y)
    y = layers.ReLU(name="block1_relu1")(y)
    y = layers.Conv2D(8, 3, padding="same", use_bias=False, name="block1_conv2")(y)
    y = layers.BatchNormalization(name="block1_bn2")(y)
    y = layers.Add(name="block1_add")([x, y])
    y = layers.ReLU(name="block1_out")(y)
    y = layers.GlobalAveragePooling2D(name="avg_pool")(y)
    out = layers.Dense(2, name="logits")(y)
    return keras.Model(inp, out, name="resnet_stem_mini")


def k_se_mix():
    inp = keras.Input((96, 96, 3), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescaling")(inp)
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)   # 96 -> 48
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.Activation("hard_swish", name="stem_hard_swish")(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw_conv")(x)
    x = layers.BatchNormalization(name="dw_bn")(x)
    x = layers.Activation("swish", name="dw_swish")(x)
    s = layers.GlobalAveragePooling2D(keepdims=True, name="se_squeeze")(x)                    # [N,1,1,16]
    s = layers.Conv2D(4, 1, activation="relu", name="se_reduce")(s)
    s = layers.Conv2D(16, 1, activation="sigmoid", name="se_expand")(s)
    x = layers.Multiply(name="se_excite")([x, s])
    x = layers.Conv2D(8, 1, use_bias=False, name="project_conv")(x)
    x = layers.BatchNormalization(name="project_bn")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    out = layers.Dense(2, name="logits")(x)
    return keras.Model(inp, out, name="se_mix_mini")


def k_inception_mix():
    inp = keras.Input((96, 96, 3), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescaling")(inp)
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)    # 96 -> 48
    x = layers.BatchNormalization(name="stem_bn")(x)
    stem = layers.ReLU(name="stem_relu")(x)
    a = layers.Conv2D(6, 1, use_bias=False, name="branch_a_conv")(stem)
    a = layers.BatchNormalization(name="branch_a_bn")(a)
    a = layers.ReLU(name="branch_a_relu")(a)
    b = layers.Conv2D(4, 1, activation="relu", name="branch_b_reduce")(stem)
    b = layers.Conv2D(6, 3, padding="same", use_bias=False, name="branch_b_conv")(b)
    b = layers.BatchNormalization(name="branch_b_bn")(b)
    b = layers.ReLU(name="branch_b_relu")(b)
    c = layers.MaxPooling2D(3, strides=1, padding="same", name="branch_c_pool")(stem)
    c = layers.Conv2D(4, 1, activation="relu", name="branch_c_conv")(c)
    x = layers.Concatenate(axis=-1, name="block_concat")([a, b, c])                          # [N,48,48,16]
    x = layers.GlobalAveragePooling2D(name="block_pool")(x)
    s = layers.GlobalAveragePooling2D(name="stem_pool")(stem)
    x = layers.Concatenate(axis=-1, name="head_concat")([x, s])                              # [N,24]
    out = layers.Dense(2, name="logits")(x)
    return keras.Model(inp, out, name="inception_mix_mini")


def all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def randomize_keras(model, seed, batch):
    """As randomize_torch: He-normal kernels, random biases and BN gamma/beta, BN moving
    statistics measured on `batch` (one training-mode pass with momentum 0) then perturbed."""
    rng = np.random.default_rng(seed + 2000)
    for v in model.weights:          # includes the variables of nested models, in a fixed order
        name = v.path.split("/")[-1]
        shape = tuple(v.shape)
        if name in ("kernel", "depthwise_kernel", "pointwise_kernel"):
            # Keras kernels are [kh, kw, in, out] / depthwise [kh, kw, in, mult]: fan_in = kh*kw*in
            # for a standard conv, kh*kw for a depthwise one.
            fan_in = int(np.prod(shape[:-1])) if name != "depthwise_kernel" else int(np.prod(shape[:2]))
            val = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        elif name == "gamma":
            val = 0.6 + 0.8 * rng.random(shape)
        elif name == "beta":
            val = 0.2 * rng.standard_normal(shape)
        elif name == "bias":
            val = 0.05 * rng.standard_normal(shape)
        else:
            continue
        v.assign(val.astype("float32"))
    bns = [l for l in all_layers(model) if isinstance(l, layers.BatchNormalization)]
    for l in bns:
        l.momentum = 0.0
    model(batch, training=True)
    for l in bns:
        l.momentum = 0.99
        var = keras.ops.convert_to_numpy(l.moving_variance)
        mean = keras.ops.convert_to_numpy(l.moving_mean)
        l.moving_mean.assign((mean + 0.1 * rng.standard_normal(mean.shape) * np.sqrt(var)).astype("float32"))
        l.moving_variance.assign((var * np.exp(0.2 * rng.standard_normal(var.shape))).astype("float32"))
    return model


def normalize_keras_zip(path):
    """Make reruns byte-identical: fixed zip timestamps and metadata.json date_saved, and the
    config's shared_object_id values (Python id()s) renumbered 1, 2, ... in order of appearance."""
    with zipfile.ZipFile(path) as z:
        entries = [(info, z.read(info.filename)) for info in z.infolist()]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for info, data in entries:
            if info.filename == "metadata.json":
                meta = json.loads(data)
                meta["date_saved"] = FIXED_DATE
                data = json.dumps(meta).encode()
            elif info.filename == "config.json":
                ids = {}

                def renumber(o):
                    if isinstance(o, dict):
                        return {k: ids.setdefault(v, len(ids) + 1) if k == "shared_object_id" else renumber(v)
                                for k, v in o.items()}
                    return [renumber(v) for v in o] if isinstance(o, list) else o
                data = json.dumps(renumber(json.loads(data))).encode()
            new = zipfile.ZipInfo(info.filename, date_time=(2024, 1, 1, 0, 0, 0))
            new.compress_type = info.compress_type
            new.external_attr = info.external_attr
            z.writestr(new, data)
    Path(path).write_bytes(buf.getvalue())


# ----------------------------------------------------------------------------- inputs

def image_paths(data):
    paths = sorted((data / "chest-xray-val").glob("*/*.jpeg"))
    if len(paths) != 16:
        sys.exit(f"expected 16 images under {data}/chest-xray-val, found {len(paths)}")
    return paths


def onnx_uint8(path, h, w):
    return np.asarray(Image.open(path).convert("RGB").resize((w, h), Image.BILINEAR), dtype=np.uint8)


@functools.lru_cache(maxsize=None)
def resized(kind, paths, h, w):
    """The 16 images after decode and resize, uint8 [16, H, W, 3]; kind 'onnx' or 'keras'."""
    load = onnx_uint8 if kind == "onnx" else keras_uint8
    return np.stack([load(p, h, w) for p in paths])


def onnx_batch(paths, h, w):
    return np.stack([onnx_input(a) for a in resized("onnx", paths, h, w)])


def keras_batch(paths, h, w, scale):
    return resized("keras", paths, h, w).astype(np.float32) * np.float32(scale)


def save_sample(out, kind, paths, h, w):
    """The first image after decode and resize, shared by every model with that preprocessing."""
    name = f"input.{'bilinear' if kind == 'onnx' else 'nearest'}{h}x{w}.npy"
    np.save(out / name, resized(kind, paths, h, w)[0])
    return name


def onnx_input(u8):
    x = u8.astype(np.float32) / 255.0
    x = (x - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def keras_uint8(path, h, w):
    img = keras.utils.load_img(str(path), color_mode="rgb", target_size=(h, w), interpolation="nearest")
    a = keras.utils.img_to_array(img, dtype="float32")
    assert np.array_equal(a, np.round(a)) and a.max() <= 255
    return a.astype(np.uint8)


def floats(a):
    return [float(v) for v in np.asarray(a, dtype=np.float32).reshape(-1)]


# ----------------------------------------------------------------------------- writers

def insert_dropout(path):
    """Put an inference-mode Dropout (ratio 0.5, no training_mode input: identity) before the last Gemm."""
    m = onnx.load(path)
    g = m.graph
    gemms = [i for i, n in enumerate(g.node) if n.op_type == "Gemm"]
    last = g.node[gemms[-1]]
    src = last.input[0]
    g.initializer.append(onnx.numpy_helper.from_array(np.array(0.5, np.float32), "dropout_ratio"))
    drop = onnx.helper.make_node("Dropout", [src, "dropout_ratio"], ["dropout_out"], name="/classifier/Dropout")
    last.input[0] = "dropout_out"
    g.node.insert(gemms[-1], drop)
    onnx.checker.check_model(m)
    onnx.save(m, path)


def global_average_pool(opset):
    """A translation of aten's adaptive_avg_pool2d to ONNX GlobalAveragePool, for the dynamo
    exporter's custom_translation_table (it writes ReduceMean + Reshape otherwise). Only for
    models whose adaptive pooling is to 1x1."""
    op = getattr(onnxscript, f"opset{opset}")

    def gap(x, output_size):
        return op.GlobalAveragePool(x)
    return {torch.ops.aten.adaptive_avg_pool2d.default: gap}


def export_onnx(model, path, h, w, opset, preserve_bn, gap_op=False):
    x = torch.zeros(1, 3, h, w)
    if opset <= 17:
        torch.onnx.export(
            model, (x,), str(path), dynamo=False, opset_version=opset,
            training=torch.onnx.TrainingMode.PRESERVE if preserve_bn else torch.onnx.TrainingMode.EVAL,
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    else:
        torch.onnx.export(
            model, (x,), str(path), dynamo=True, opset_version=opset, external_data=False,
            input_names=["input"], output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            custom_translation_table=global_average_pool(opset) if gap_op else None)
        # The dynamo exporter records each node's Python stack trace (local paths, line numbers of
        # this script) in its metadata_props; drop those so the file does not depend on the checkout.
        m = onnx.load(str(path))
        for node in m.graph.node:
            keep = [p for p in node.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
            del node.metadata_props[:]
            node.metadata_props.extend(keep)
        onnx.save(m, str(path))
    onnx.checker.check_model(onnx.load(str(path)))


def onnx_case(out, data, paths, name, model, h, w, opset, preserve_bn, dropout=False, notes="",
              gap_op=False):
    path = out / name
    export_onnx(model, path, h, w, opset, preserve_bn, gap_op)
    if dropout:
        insert_dropout(str(path))
    batch = onnx_batch(paths, h, w)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"input": batch})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(batch)).numpy()
    diff = float(np.abs(got - ref).max())
    graph = onnx.load(str(path)).graph
    ops = sorted({n.op_type for n in graph.node})
    doc = {
        "framework": "onnx", "model": name, "opset": opset,
        "exporter": "torch.onnx.export " + ("dynamo=True (torch.export)" +
                                            (", custom_translation_table: adaptive_avg_pool2d -> "
                                             "GlobalAveragePool" if gap_op else "") if opset > 17 else
                                            "dynamo=False (TorchScript), training=" +
                                            ("PRESERVE" if preserve_bn else "EVAL")),
        "versions": versions(), "runtime": "onnxruntime CPUExecutionProvider",
        "input": {"name": "input", "shape": ["batch", 3, h, w], "layout": "NCHW"},
        "output": {"name": "logits", "kind": "logits", "softmax_in_graph": False},
        "ops": ops, "notes": notes,
        "preprocessing": {
            "decode": "PIL.Image.open(path).convert('RGB')",
            "resize": "bilinear", "resize_impl": "PIL Image.resize((W, H), Image.BILINEAR)",
            "size": [h, w], "color": "rgb", "scale": 1.0 / 255.0, "offset": 0.0,
            "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
            "order": "x = (u8 / 255 - mean[c]) / std[c] in float32 (scale = 1/255 is applied as a division by 255); layout NCHW",
        },
        "classes": CLASSES, "max_abs_diff_torch_vs_ort": diff,
        "input_sample": {"file": save_sample(out, "onnx", paths, h, w), "image": rel(paths[0], data),
                         "content": "uint8 [H, W, 3] RGB after the resize, before scale/mean/std"},
        "images": [{"path": rel(p, data), "logits": floats(got[i]), "torch_logits": floats(ref[i])}
                   for i, p in enumerate(paths)],
    }
    write_json(out / (name + ".expected.json"), doc)
    print(f"{name}: ops {ops}\n  torch vs ort max abs diff {diff:.3g}; logits[0] {got[0]}")
    return doc


def keras_case(out, data, paths, name, model, h, w, scale, in_model, output_kind="logits", notes=""):
    path = out / name
    model.save(str(path))
    normalize_keras_zip(path)
    loaded = keras.saving.load_model(str(path))
    batch = keras_batch(paths, h, w, scale)
    got = np.asarray(keras.ops.convert_to_numpy(loaded(batch, training=False)))
    direct = np.asarray(keras.ops.convert_to_numpy(model(batch, training=False)))
    assert np.array_equal(got, direct), "reloaded .keras model differs from the built one"
    doc = {
        "framework": "keras", "model": name, "versions": versions(),
        "input": {"name": model.inputs[0].name, "shape": ["batch", h, w, 3], "layout": "NHWC"},
        "output": {"name": model.layers[-1].name, "kind": output_kind,
                   "softmax_in_graph": output_kind == "probabilities"},
        "in_model_preprocessing": in_model, "notes": notes,
        "preprocessing": {
            "decode": "keras.utils.load_img(path, color_mode='rgb', target_size=(H, W), "
                      "interpolation='nearest'); keras.utils.img_to_array",
            "resize": "nearest", "resize_impl": "PIL Image.resize((W, H), Image.NEAREST) inside load_img",
            "size": [h, w], "color": "rgb", "scale": scale, "offset": 0.0,
            "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
            "order": "x = u8 * scale + offset, layout NHWC, then the model (its own in-model layers apply)",
        },
        "classes": CLASSES,
        "input_sample": {"file": save_sample(out, "keras", paths, h, w), "image": rel(paths[0], data),
                         "content": "uint8 [H, W, 3] RGB after the resize, before scale"},
        "images": [{"path": rel(p, data), output_kind: floats(got[i])} for i, p in enumerate(paths)],
    }
    write_json(out / (name + ".expected.json"), doc)
    print(f"{name}: {model.count_params()} params; {output_kind}[0] {got[0]}")
    return doc


def rel(p, data):
    return p.relative_to(data).as_posix()


def write_json(path, doc):
    path.write_text(json.dumps(doc, indent=1) + "\n")


def main():
    here = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=here.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=here / "fixtures" / "import")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="+", metavar="FILE",
                    help="make only these model files (e.g. opset_mix_op11.onnx); each model has its "
                         "own seed, so the others' files would come out the same")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    paths = tuple(image_paths(a.data))

    def want(*names):
        return not a.only or any(n in a.only for n in names)

    # ONNX (torch weights)
    if want("xception_op13.onnx"):
        torch.manual_seed(a.seed)
        xc = randomize_torch(XceptionMini(), a.seed, onnx_batch(paths, 150, 150))
        onnx_case(a.out, a.data, paths, "xception_op13.onnx", xc, 150, 150, 13, preserve_bn=True,
                  notes="BatchNormalization kept (training=PRESERVE on an eval-mode model); MaxPool 3x3 "
                        "stride 2 pads 1 on every side (torch has no asymmetric 'same').")
    if want("mobilenetv2_op13.onnx", "mobilenetv2_op18.onnx"):
        torch.manual_seed(a.seed + 1)
        mb = randomize_torch(MobileNetV2Mini(), a.seed + 1, onnx_batch(paths, 224, 224))
        if want("mobilenetv2_op13.onnx"):
            onnx_case(a.out, a.data, paths, "mobilenetv2_op13.onnx", mb, 224, 224, 13, preserve_bn=False,
                      notes="BatchNorm folded into Conv by the exporter; Dropout removed by the exporter.")
        if want("mobilenetv2_op18.onnx"):
            onnx_case(a.out, a.data, paths, "mobilenetv2_op18.onnx", mb, 224, 224, 18, preserve_bn=False,
                      notes="Same torch model and weights as mobilenetv2_op13.onnx, dynamo exporter.")
    if want("vgg_op13.onnx"):
        torch.manual_seed(a.seed + 2)
        vg = randomize_torch(VGGMini(), a.seed + 2, onnx_batch(paths, 224, 224))
        onnx_case(a.out, a.data, paths, "vgg_op13.onnx", vg, 224, 224, 13, preserve_bn=False, dropout=True,
                  notes="Dropout (ratio 0.5 as an input, no training_mode: identity) inserted before the "
                        "last Gemm after export; Flatten of NCHW [N,32,7,7] before the first Gemm.")
    if want("resnet_stem_op13.onnx"):
        torch.manual_seed(a.seed + 3)
        rs = randomize_torch(ResNetStem(), a.seed + 3, onnx_batch(paths, 96, 96))
        onnx_case(a.out, a.data, paths, "resnet_stem_op13.onnx", rs, 96, 96, 13, preserve_bn=False,
                  notes="BatchNorm folded into Conv; the max pool's padding is a separate Pad node "
                        "(mode constant, value 0, pads 1 on each spatial side) feeding MaxPool 3x3/2 "
                        "without pads (96 -> 48 -> 24); zero padding equals MaxPool's own padding here "
                        "only because its input is a Relu output.")
    if want("se_mix_op17.onnx"):
        torch.manual_seed(a.seed + 4)
        se = randomize_torch(SEMix(), a.seed + 4, onnx_batch(paths, 96, 96))
        onnx_case(a.out, a.data, paths, "se_mix_op17.onnx", se, 96, 96, 17, preserve_bn=False,
                  notes="BatchNorm folded into Conv; HardSwish native (opset 14+); SiLU written as "
                        "Sigmoid + Mul; squeeze-excite: GlobalAveragePool, Conv 1x1 (bias), Relu, Conv "
                        "1x1 (bias), Sigmoid, then Mul of [N,16,48,48] by [N,16,1,1] (broadcast).")
    if want("inception_mix_op13.onnx"):
        torch.manual_seed(a.seed + 5)
        im = randomize_torch(InceptionMix(), a.seed + 5, onnx_batch(paths, 96, 96))
        onnx_case(a.out, a.data, paths, "inception_mix_op13.onnx", im, 96, 96, 13, preserve_bn=False,
                  notes="BatchNorm folded into Conv; Inception-style block: three branches (Conv 1x1; "
                        "Conv 1x1 + Relu, Conv 3x3 pads 1; MaxPool 3x3 stride 1 pads 1, Conv 1x1 + Relu) "
                        "joined by Concat axis 1 of [N,6,48,48], [N,6,48,48], [N,4,48,48] -> [N,16,48,48]; "
                        "head: Concat axis 1 of [N,16] (pooled block) and [N,8] (pooled stem), Gemm.")

    # The same operators at the ends of the opset range: 11 (TorchScript exporter, BatchNorm
    # nodes kept) and 21 (dynamo exporter; its optimizer folds the stem's BatchNorm into the Conv).
    if want("opset_mix_op11.onnx", "opset_mix_op21.onnx"):
        torch.manual_seed(a.seed + 6)
        om = randomize_torch(OpsetMix(), a.seed + 6, onnx_batch(paths, 96, 96))
        if want("opset_mix_op11.onnx"):
            onnx_case(a.out, a.data, paths, "opset_mix_op11.onnx", om, 96, 96, 11, preserve_bn=True,
                      notes="BatchNormalization kept (training=PRESERVE); Clip with min/max inputs "
                            "(Constant nodes); AveragePool 3x3/1 pads 1 count_include_pad=1, AveragePool "
                            "3x3/2 pads 1 count_include_pad=0; GlobalAveragePool, Flatten, Gemm transB=1.")
        if want("opset_mix_op21.onnx"):
            onnx_case(a.out, a.data, paths, "opset_mix_op21.onnx", om, 96, 96, 21, preserve_bn=False,
                      gap_op=True,
                      notes="Same torch model and weights as opset_mix_op11.onnx, dynamo exporter at "
                            "opset 21: the stem's BatchNorm folded into its Conv, the one after the Add "
                            "kept; Clip with initializer bounds; both AveragePool nodes as at opset 11; "
                            "GlobalAveragePool (through custom_translation_table: the exporter writes "
                            "ReduceMean otherwise, which mobilenetv2_op18.onnx covers), Reshape "
                            "(allowzero=1), Gemm.")

    # Keras (own weights)
    if want("xception.keras", "xception_softmax.keras"):
        keras.utils.set_random_seed(a.seed)
        kx = randomize_keras(k_xception(), a.seed, keras_batch(paths, 150, 150, 1.0))
        if want("xception.keras"):
            keras_case(a.out, a.data, paths, "xception.keras", kx, 150, 150, 1.0,
                       ["Rescaling(scale=1/127.5, offset=-1)"],
                       notes="Output: logits (Dense without activation).")
        ks = k_xception(softmax=True)
        ks.set_weights(kx.get_weights())
        if want("xception_softmax.keras"):
            keras_case(a.out, a.data, paths, "xception_softmax.keras", ks, 150, 150, 1.0,
                       ["Rescaling(scale=1/127.5, offset=-1)"], output_kind="probabilities",
                       notes="Same weights as xception.keras; the last Dense has activation='softmax'.")
    if want("mobilenetv2.keras"):
        keras.utils.set_random_seed(a.seed + 1)
        km = randomize_keras(k_mobilenetv2(), a.seed + 1, keras_batch(paths, 224, 224, 1.0))
        keras_case(a.out, a.data, paths, "mobilenetv2.keras", km, 224, 224, 1.0,
                   ["Rescaling(scale=1/255)", "Normalization(mean=ImageNet mean, variance=std^2; in config)"],
                   notes="Block 3 is a nested Functional model 'ir_block_nested'.")
    if want("vgg.keras"):
        keras.utils.set_random_seed(a.seed + 2)
        kv = randomize_keras(k_vgg(), a.seed + 2, keras_batch(paths, 224, 224, 1.0 / 255.0))
        keras_case(a.out, a.data, paths, "vgg.keras", kv, 224, 224, 1.0 / 255.0, [],
                   notes="No scaling layer in the model: the caller multiplies by 1/255 ('scale').")
    if want("resnet_stem.keras"):
        keras.utils.set_random_seed(a.seed + 3)
        kr = randomize_keras(k_resnet_stem(), a.seed + 3, keras_batch(paths, 96, 96, 1.0))
        keras_case(a.out, a.data, paths, "resnet_stem.keras", kr, 96, 96, 1.0, ["Rescaling(scale=1/255)"],
                   notes="ZeroPadding2D(1) + MaxPooling2D(3, strides=2, 'valid') as ResNet50's stem "
                         "(keras.applications): the pool sees explicit zeros, not -inf padding.")
    if want("se_mix.keras"):
        keras.utils.set_random_seed(a.seed + 4)
        ke = randomize_keras(k_se_mix(), a.seed + 4, keras_batch(paths, 96, 96, 1.0))
        keras_case(a.out, a.data, paths, "se_mix.keras", ke, 96, 96, 1.0,
                   ["Rescaling(scale=1/127.5, offset=-1)"],
                   notes="Activation('hard_swish') and Activation('swish') are saved under their canonical "
                         "names 'hard_silu' and 'silu'; squeeze-excite: GlobalAveragePooling2D(keepdims=True), "
                         "Conv2D(activation='relu'), Conv2D(activation='sigmoid'), Multiply (broadcast "
                         "[N,1,1,16] over [N,48,48,16]).")
    if want("inception_mix.keras"):
        keras.utils.set_random_seed(a.seed + 5)
        ki = randomize_keras(k_inception_mix(), a.seed + 5, keras_batch(paths, 96, 96, 1.0))
        keras_case(a.out, a.data, paths, "inception_mix.keras", ki, 96, 96, 1.0,
                   ["Rescaling(scale=1/127.5, offset=-1)"],
                   notes="Inception-style block: Concatenate(axis=-1) of three branches [N,48,48,6], "
                         "[N,48,48,6], [N,48,48,4] -> [N,48,48,16] (the third is MaxPooling2D(3, strides=1, "
                         "'same') then Conv2D 1x1 relu); head: Concatenate(axis=-1) of two pooled vectors, "
                         "the block's [N,16] then the stem's [N,8], before Dense(2).")

    for f in sorted(a.out.iterdir()):
        print(f"{f.stat().st_size:>9}  {f.name}")


if __name__ == "__main__":
    main()
