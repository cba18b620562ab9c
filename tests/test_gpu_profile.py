"""bench/gpu_profile.py: the kernel-name classifier, the time budget, and its CPU dry run's JSON."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from bench import gpu_profile as gp
from tests.helpers import ROOT

NAMES = [  # real-looking CUDA kernel names (cuBLAS, cuDNN, flash, ATen, inductor's Triton) and CPU op names
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_kernel__5x_cublas",
     "matmul"),
    ("nvjet_tst_192x192_64x4_2x1_v_bz_coopA_TNN", "matmul"),
    ("ampere_bf16_s16816gemm_bf16_128x128_ldg8_f2f_stages_64x3_tn", "matmul"),
    ("void cutlass::Kernel2<cutlass_80_wmma_tensorop_bf16_s161616gemm_bf16_32x32_128x2_tn_align8>(Params)", "matmul"),
    ("triton_tem_fused_mm_3", "matmul"),
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4, false, false, cutlass::bfloat16_t, "
     "Flash_kernel_traits<64, 128, 128, 4, cutlass::bfloat16_t> >, false, true, false, false, true, true>(Flash_fwd_params)",
     "attention"),
    ("void pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<Flash_bwd_kernel_traits<64, 128, 128, 8>>", "attention"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x128_4x1x1_kernel0_0", "attention"),
    ("fmha_cutlassF_bf16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<cutlass::bfloat16_t>::Params)",
     "attention"),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous namespace)::"
     "TensorListMetadata<4>, at::native::(anonymous namespace)::FusedAdamMathFunctor<float, 4, "
     "(at::native::ADAM_MODE)1, false>, double*, double, double, double, double, double, bool, float*, float*>", "optimizer"),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous namespace)::"
     "TensorListMetadata<1>, at::native::(anonymous namespace)::LpNormFunctor<float, (at::native::NormType)1, float, "
     "float>, float*, int>", "clip"),
    ("void at::native::lpnorm_cleanup<float, (at::native::NormType)1, float, float>(float const*, "
     "at::native::TensorListAddresses, int)", "clip"),
    ("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<at::native::(anonymous namespace)::"
     "TensorListMetadata<1>, at::native::(anonymous namespace)::BinaryOpScalarTensorFunctor<float, 1, 1, 0>, "
     "std::multiplies<float>, float*>", "clip"),
    ("triton_red_fused__log_softmax__to_copy_nll_loss_forward_0", "loss"),
    ("void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float, float, float, "
     "at::native::(anonymous namespace)::LogSoftMaxForwardEpilogue>(float*, float const*, int)", "loss"),
    ("void at::native::(anonymous namespace)::nll_loss_forward_reduce_cuda_kernel_2d<float, long>", "loss"),
    ("triton_per_fused_native_layer_norm_native_layer_norm_backward_12", "layernorm"),
    ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<c10::BFloat16, float>(int, float, "
     "c10::BFloat16 const*, c10::BFloat16 const*, c10::BFloat16 const*, float*, float*, c10::BFloat16*)", "layernorm"),
    ("void at::native::(anonymous namespace)::embedding_backward_feature_kernel<float, float, long>", "embedding"),
    ("void at::native::indexing_backward_kernel<float, 4>(long const*, long const*, float const*, float*, long)",
     "embedding"),
    ("triton_poi_fused_add_embedding_0", "embedding"),
    ("triton_poi_fused_add_mul_sigmoid_5", "elementwise"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>, "
     "at::detail::Array<char*, 3> >(int, at::native::CUDAFunctor_add<float>, at::detail::Array<char*, 3>)", "elementwise"),
    ("triton_red_fused_add_mul_sum_7", "reduction"),
    ("triton_per_fused_mul_sum_9", "reduction"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::func_wrapper_t<float, "
     "at::native::sum_functor<float, float, float>::operator()(at::TensorIterator&)::{lambda(float, float)#1}>, "
     "unsigned int, float, 4> >", "reduction"),
    ("void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda(at::TensorIteratorBase&)::"
     "{lambda()#3}::operator()() const::{lambda()#7}::operator()() const::{lambda(float)#1}, at::detail::Array<char*, 2>>",
     "copy"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, at::detail::Array<char*, 1> >",
     "copy"),
    ("void at::native::(anonymous namespace)::CatArrayBatchedCopy<float, unsigned int, 2, 128, 1>", "copy"),
    ("triton_poi_fused__to_copy_3", "copy"),
    ("Memcpy DtoD (Device -> Device)", "copy"),
    ("Memset (Device)", "copy"),
    ("cuStreamGetCaptureInfo_v2", "other"),
    # CPU op names (self times of the dry run)
    ("aten::mm", "matmul"), ("aten::addmm", "matmul"), ("aten::bmm", "matmul"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu_backward", "attention"),
    ("aten::_fused_adamw_", "optimizer"), ("aten::_foreach_norm", "clip"), ("aten::_foreach_mul_", "clip"),
    ("aten::embedding_dense_backward", "embedding"), ("aten::embedding", "embedding"),
    ("aten::_log_softmax", "loss"), ("aten::_log_softmax_backward_data", "loss"), ("aten::nll_loss_forward", "loss"),
    ("aten::native_layer_norm", "layernorm"), ("aten::native_layer_norm_backward", "layernorm"),
    ("aten::copy_", "copy"), ("aten::_to_copy", "copy"), ("aten::cat", "copy"), ("aten::fill_", "copy"),
    ("aten::sum", "reduction"), ("aten::mean", "reduction"), ("aten::linalg_vector_norm", "reduction"),
    ("aten::mul", "elementwise"), ("aten::add_", "elementwise"), ("aten::gelu_backward", "elementwise"),
    ("aten::sigmoid_backward", "elementwise"), ("aten::softplus", "elementwise"),
    ("aten::empty", "other"), ("aten::view", "other"), ("autograd::engine::evaluate_function: MmBackward0", "other"),
]


@pytest.mark.parametrize("name, category", NAMES, ids=[n[:40] for n, _ in NAMES])
def test_classify(name, category):
    assert gp.classify(name) == category


def fake_item(clock, out):
    """A measure() stand-in that takes 10 s of a fake clock and checks the JSON holds every finished item."""
    def measure(preset, ablation, batch, profiled, a, device):
        done = json.loads(out.read_text())["items"] if out.exists() else []
        assert len(done) == clock[0] // 10
        clock[0] += 10
        return dict(step_ms=2.0 if preset == "baseline" else 3.0, phases_ms=dict.fromkeys(gp.PHASES, 0.5), host_ms=1.0,
                    mfu=None, peak_mem_mib=None)
    return measure


def test_budget_stops_starting_items_and_the_json_keeps_each_finished_one(tmp_path, monkeypatch):
    clock, out = [0], tmp_path / "p.json"
    monkeypatch.setattr(gp, "time", SimpleNamespace(time=lambda: clock[0]))
    monkeypatch.setattr(gp, "measure", fake_item(clock, out))
    monkeypatch.setattr(gp, "free_memory", lambda cuda: None)
    gp.main(["--device=cpu", "--dry_run", "--budget_s=25", f"--out={out}"])  # 2 items of 10 s; the 3rd would end at 30
    res = json.loads(out.read_text())
    names = [n for n, *_ in gp.items(gp.parse_args(["--device=cpu", "--dry_run"]))]
    assert [r["name"] for r in res["items"]] == names[:2] and res["skipped"] == names[2:] and not res["complete"]
    assert res["ratios"] == {"yuriiformer/b2": {"time": 1.5, "mem": None}}


@pytest.mark.parametrize("argv, message", [(["--device=cpu"], "add --dry_run"),
                                           (["--device=cpu", "--dry_run", "--batch_sizes=8,x"], "comma-separated"),
                                           (["--device=cpu", "--dry_run", "--batch_sizes=8,16"], "three positive")])
def test_bad_arguments_are_one_line_errors(argv, message):
    with pytest.raises(SystemExit) as e:
        gp.parse_args(argv)
    assert str(e.value).startswith("error: ") and message in str(e.value)


@pytest.mark.slow
def test_dry_run_on_the_cpu_writes_every_item(tmp_path):
    out = tmp_path / "gpu_profile.json"
    p = subprocess.run([sys.executable, "bench/gpu_profile.py", "--device=cpu", "--dry_run", f"--out={out}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["complete"] and not res["skipped"] and res["bench"] == "gpu_profile"
    names = [r["name"] for r in res["items"]]
    assert names == ["baseline/b2", "yuriiformer/b2", *[f"yuriiformer+{a}/b2" for a in gp.ABLATIONS],
                     "baseline/b1", "yuriiformer/b1", "baseline/b4", "yuriiformer/b4"]
    cats = [c for c, _ in gp.CATEGORIES] + ["other"]
    for r in res["items"]:
        assert set(r["phases_ms"]) == set(gp.PHASES) and all(v > 0 for v in r["phases_ms"].values())
        assert r["step_ms"] == pytest.approx(sum(r["phases_ms"].values()), rel=0.5) and r["mfu"] is None
        assert ("kernels" in r) == ("/b2" in r["name"])
        if "kernels" in r:
            k = r["kernels"]
            assert list(k["by_category_ms"]) == cats and sum(k["by_category_ms"].values()) == pytest.approx(k["total_ms"])
            assert k["by_category_ms"]["matmul"] > 0 and k["by_category_ms"]["optimizer"] > 0
    frozen = {r["name"]: r for r in res["items"]}
    assert frozen["yuriiformer+frozen_coef/b2"]["trainable"] < frozen["yuriiformer/b2"]["trainable"]
    assert set(res["ratios"]) == {n for n in names if not n.startswith("baseline")}
    assert "| item | step ms |" in p.stdout
