"""The API exception handler renders AppError and Django's ValidationError in the one error shape."""

import pytest
from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError

from accounts.errors import AppError
from tests.support.api_views import raised_through_api


class SlowDown(AppError):
    code, status = "slow_down", 503

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after

    def details(self) -> dict:
        return {"queue": "answers"}


class BadColour(AppError):
    """A field error declared by an app: 400 "invalid" unless the class says otherwise."""


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert set(response.data) == {"error", "request_id"}
    return response.data["error"]


def test_an_app_error_answers_with_its_status_code_message_details_and_retry_after():
    response = raised_through_api(SlowDown("Too many answers at once.", retry_after=12))
    error = _error(response, 503)
    assert error == {"code": "slow_down", "message": "Too many answers at once.", "queue": "answers"}
    assert response["Retry-After"] == "12"


def test_an_app_error_without_retry_after_sends_no_retry_after_header():
    response = raised_through_api(SlowDown("Busy.", retry_after=None))
    _error(response, 503)
    assert "Retry-After" not in response


def test_an_app_error_with_fields_is_a_field_error_named_by_its_first_field():
    response = raised_through_api(BadColour("Pick a colour.", fields={"colour": ["Pick red or blue."]}))
    error = _error(response, 400)
    assert error == {"code": "invalid", "message": "colour: Pick red or blue.",
                     "fields": {"colour": ["Pick red or blue."]}}


def test_an_instance_code_overrides_the_class_code():
    error = _error(raised_through_api(BadColour("Empty.", code="empty")), 400)
    assert error["code"] == "empty" and error["message"] == "Empty." and "fields" not in error


def test_a_django_validation_error_per_field_is_a_400_invalid_with_its_fields():
    exc = DjangoValidationError({"name": ["This name is taken."], "scopes": ["Unknown scope: root."]})
    error = _error(raised_through_api(exc), 400)
    assert error["code"] == "invalid" and error["message"] == "name: This name is taken."
    assert error["fields"] == {"name": ["This name is taken."], "scopes": ["Unknown scope: root."]}


def test_a_django_validation_error_without_a_field_is_a_non_field_error():
    error = _error(raised_through_api(DjangoValidationError("Only failed documents can be retried.")), 400)
    assert error == {"code": "invalid", "message": "Only failed documents can be retried.",
                     "fields": {"non_field_errors": ["Only failed documents can be retried."]}}


@pytest.mark.parametrize("exc", [
    DjangoValidationError({NON_FIELD_ERRORS: ["Start must be before end."]}),
    DjangoValidationError([DjangoValidationError("Start must be before end.")]),
])
def test_a_django_validation_error_of_a_whole_object_is_a_non_field_error(exc):
    error = _error(raised_through_api(exc), 400)
    assert error == {"code": "invalid", "message": "Start must be before end.",
                     "fields": {"non_field_errors": ["Start must be before end."]}}
