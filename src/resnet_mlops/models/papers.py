"""Error rates the papers report, for the model table in docs/MODELS.md.

Values are percentages as printed. CIFAR entries are (CIFAR-10 test error, source);
ImageNet entries are (top-1, top-5, source): validation error, 10-crop testing.
Names without an entry have no result for that exact network in the papers.
"""

RESNET = "He et al. 2016, Deep Residual Learning"
IDENTITY = "He et al. 2016, Identity Mappings"

CIFAR10_ERROR = {
    "resnet20": ("8.75", f"{RESNET}, Table 6"),
    "resnet32": ("7.51", f"{RESNET}, Table 6"),
    "resnet44": ("7.17", f"{RESNET}, Table 6"),
    "resnet56": ("6.97", f"{RESNET}, Table 6"),
    "resnet110": ("6.43", f"{RESNET}, Table 6 (best of 5 runs; mean 6.61)"),
    "resnet1202": ("7.93", f"{RESNET}, Table 6"),
    "preact_resnet164": ("5.46", f"{IDENTITY}, Table 3"),
    "preact_resnet1001": ("4.92", f"{IDENTITY}, Table 3"),
}

IMAGENET_ERROR = {
    "resnet18": ("27.88", None, f"{RESNET}, Table 2 (option A shortcuts; top-1 only)"),
    "resnet34": ("24.52", "7.46", f"{RESNET}, Table 3 (option B)"),
    "resnet50": ("22.85", "6.71", f"{RESNET}, Table 3"),
    "resnet101": ("21.75", "6.05", f"{RESNET}, Table 3"),
    "resnet152": ("21.43", "5.71", f"{RESNET}, Table 3"),
}
