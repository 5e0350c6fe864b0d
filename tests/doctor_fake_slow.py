from tests.doctor_fake_checks import SLOW as CHECKS  # noqa: F401
