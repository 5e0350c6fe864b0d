from tests.doctor_fake_checks import HANGING as CHECKS  # noqa: F401
