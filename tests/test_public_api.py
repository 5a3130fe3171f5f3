"""The public surface: every name in rpfm.__all__ imports; env_report explains every op's backend."""
import subprocess
import sys

import rpfm


def test_all_names_import():
    for name in rpfm.__all__:
        assert getattr(rpfm, name) is not None, name
    assert rpfm.RPFMPipeline.__module__ == "rpfm.pipeline"


def test_env_report_names_backends_and_reasons(capsys):
    report = rpfm.env_report()
    printed = capsys.readouterr().out
    assert report["torch"] and "extension" in report
    for op in ("attention", "adaln_modulate", "euler_cfg_step"):
        entry = report["ops"][op]
        assert entry["selected_cpu"] in entry["backends"]
        assert all(b["reason"] for b in entry["backends"].values())
        assert op in printed
    # on a machine without CUDA the triton backend must say why it is not used
    if not report["cuda_available"] and "triton" in report["ops"]["adaln_modulate"]["backends"]:
        assert not report["ops"]["adaln_modulate"]["backends"]["triton"]["available"]


def test_import_without_extension_and_light_import():
    code = ("import sys, rpfm, rpfm._ext as e; assert not e.HAS_EXT and 'RPFM_DISABLE_EXT' in e.EXT_REASON;"
            "assert 'diffusers' not in sys.modules and 'transformers' not in sys.modules;"
            "print(rpfm.env_report(print_report=False)['ops']['euler_cfg_step']['selected_cpu'])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "RPFM_DISABLE_EXT": "1"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("eager")
