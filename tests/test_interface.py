"""The method interface is declared, not probed: what the harness reads is on the base class."""
import ast
import inspect
from pathlib import Path

from mmlib import experiment
from mmlib.methods import Method, available, make_method

MMLIB = Path(experiment.__file__).parent


def test_every_method_declares_what_the_harness_reads():
    for name in available():
        m = make_method(name, **({"use": ["a"]} if name == "unimodal" else {}))
        assert isinstance(m, Method), name
        assert isinstance(m.reads_data_at_predict, bool) and isinstance(m.masked_validation, bool), name
        assert isinstance(m.embeds_modalities, bool) and isinstance(m.batchable(), bool), name
        assert m.used_modalities(["a", "b"]) == ["a", "b"], name            # before fit: every modality
        assert "val_presence" in inspect.signature(m.fit).parameters, name
        if m.embeds_modalities:
            assert type(m).embed_modality is not Method.embed_modality, name


def test_the_harness_probes_no_capability():
    for path in [MMLIB / "experiment.py", MMLIB / "methods" / "m3s.py"]:
        src = path.read_text()
        assert "getattr(" not in src and "hasattr(" not in src and "inspect.signature" not in src, path.name
    assert "base.augment =" not in (MMLIB / "methods" / "m3s.py").read_text()   # M3S passes T to prepare()


def test_no_module_imports_another_modules_private_names():
    found = []
    for path in MMLIB.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("mmlib")):
                found += [f"{path.relative_to(MMLIB)}: {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert found == []


def test_a_records_identity_names_the_code_that_fitted_it(avdigits):
    """A record written by other code is not today's fit: the identity carries a hash of the files
    the method's fit runs through (its modules, what they import, the training code)."""
    zp, ae, m3s = make_method("zp_concat"), make_method("ae_impute"), make_method("m3s", base="mmin_lite")
    assert "methods/baselines.py" in zp.code_modules() and "engine.py" in zp.code_modules()
    assert "methods/baselines.py" in ae.code_modules()                  # imputation trains a fusion baseline
    assert {"methods/m3s.py", "methods/mmin.py"} <= set(m3s.code_modules())   # M3S trains its base's network
    assert not any(m.startswith("data/") for m in m3s.code_modules())  # the data's fingerprint covers the data
    assert zp.code_version() == make_method("zp_sum").code_version() != make_method("smil").code_version()
    from mmlib.experiment import run_identity
    from mmlib.masks import full
    from mmlib.train import TrainConfig
    ident = run_identity(avdigits, zp, full(len(avdigits.splits["train"]), avdigits.modality_names), 0,
                         TrainConfig(), "quick")
    assert ident["code"] == zp.code_version() and len(ident["code"]) == 12
