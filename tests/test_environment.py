"""What a run records about the machine it ran on."""

from selfdistill.environment import cpu_from_lscpu

LSCPU = """Architecture:                            x86_64
CPU op-mode(s):                          32-bit, 64-bit
Vendor ID:                               AuthenticAMD
Model name:                              AMD EPYC
CPU family:                              25
Model:                                   17
Thread(s) per core:                      1
"""


def test_the_cpu_is_named_with_its_family_and_model_so_two_generations_of_one_name_stay_apart():
    assert cpu_from_lscpu(LSCPU) == "AMD EPYC (family 25 model 17)"
    zen5 = LSCPU.replace("Model:                                   17", "Model:                                   2")
    assert cpu_from_lscpu(zen5.replace("CPU family:                              25", "CPU family: 26")) == (
        "AMD EPYC (family 26 model 2)"
    )


def test_without_family_numbers_the_name_alone_and_without_a_name_nothing():
    assert cpu_from_lscpu("Model name:  Intel(R) Xeon(R) Processor\n") == "Intel(R) Xeon(R) Processor"
    assert cpu_from_lscpu("Architecture: aarch64\nCPU family: 8\n") is None
    assert cpu_from_lscpu("") is None
