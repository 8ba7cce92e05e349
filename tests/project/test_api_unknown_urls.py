"""README "Lists and filters": any URL under `/api/` that matches no route answers 404 with the JSON error
envelope `{"error": {"code", "message", "details"}}`, with DEBUG off (handler404) and on (where Django would
answer its HTML debug page instead); other URLs keep Django's pages."""
import pytest

pytestmark = pytest.mark.django_db

UNKNOWN = ["/api/v1/no-such-thing/", "/api/nothing", "/api/v1/connectors/x/no-such-action/", "/api/v2/"]


@pytest.fixture(params=[False, True], ids=lambda debug: f"DEBUG={debug}")
def debug(request, settings):
    settings.DEBUG = request.param
    return request.param


@pytest.mark.parametrize("path", UNKNOWN)
def test_an_unknown_api_url_is_a_json_404_in_the_error_envelope(api, make_user, token_for, debug, path):
    client = api(token_for(make_user("ada")))
    for method in (client.get, client.post, client.delete):
        response = method(path)
        assert response.status_code == 404, (method, response.status_code)
        assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
        assert response.json() == {"error": {"code": "not_found", "message": "Not found.", "details": {}}}


def test_an_anonymous_client_gets_the_same_envelope(client, debug):
    response = client.get("/api/v1/no-such-thing/", HTTP_ACCEPT="text/html")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_other_unknown_urls_keep_django_pages(client, debug):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
