"""The TF Serving REST client against a tiny local HTTP server that checks what it receives and
answers like TF Serving; the optional gRPC client's missing-extra error."""
import http.server
import importlib.util
import json
import socket
import threading

import numpy as np
import pytest

from ctmri_tf import serving
from ctmri_tf.serving import RestClient, ServingError


class FakeTFServing(http.server.BaseHTTPRequestHandler):
    """Records each request and answers with the server's next canned ``(status, body)``."""

    def do_POST(self):  # noqa: N802 (http.server's naming)
        length = int(self.headers["Content-Length"])
        self.server.requests.append(("POST", self.path, self.headers["Content-Type"],
                                     json.loads(self.rfile.read(length))))
        self._answer()

    def do_GET(self):  # noqa: N802
        self.server.requests.append(("GET", self.path, None, None))
        self._answer()

    def _answer(self):
        status, body = self.server.answers.pop(0)
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep pytest's output clean
        pass


@pytest.fixture
def server():
    httpd = http.server.HTTPServer(("127.0.0.1", 0), FakeTFServing)
    httpd.requests, httpd.answers = [], []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def url_of(httpd) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}"


def test_predict_sends_the_columnar_request_and_returns_arrays(server):
    image = np.array([[[-1024.0, 40.5], [700.25, 3000.0]]], np.float32)   # (1, 2, 2) HU
    server.answers.append((200, {"outputs": {"translated": [[[0.125, 0.5], [0.75, 1.0]]],
                                             "translated_unit": [[[-0.75, 0.0], [0.5, 1.0]]],
                                             "psnr": [31.5], "label": ["mri"], "mask": [[1, 0]]}}))
    out = RestClient(url_of(server)).predict(
        "stargan", {"image": image, "target_domain": np.array([b"mri"])},
        signature="translate", version=3)
    method, path, content_type, body = server.requests[0]
    assert (method, path, content_type) == ("POST", "/v1/models/stargan/versions/3:predict",
                                            "application/json")
    assert body == {"signature_name": "translate",
                    "inputs": {"image": [[[-1024.0, 40.5], [700.25, 3000.0]]],
                               "target_domain": ["mri"]}}
    assert np.array(body["inputs"]["image"], np.float32).tobytes() == image.tobytes()  # exact
    assert out["translated"].dtype == np.float32 and out["translated"].shape == (1, 2, 2)
    np.testing.assert_array_equal(out["translated_unit"], [[[-0.75, 0.0], [0.5, 1.0]]])
    assert out["psnr"].tolist() == [31.5]
    assert out["label"].tolist() == ["mri"]
    assert out["mask"].dtype == np.int64


def test_convenience_calls_pick_the_signature_and_repeat_a_single_modality(server):
    server.answers += [
        (200, {"outputs": {"translated": [[[[1.0]]], [[[2.0]]]],
                           "translated_unit": [[[[0]]], [[[0]]]]}}),
        (200, {"outputs": {"mask": [[[1]], [[0]]], "probabilities": [[[[0.2, 0.8]]],
                                                                       [[[0.9, 0.1]]]]}}),
        (200, {"outputs": {"probabilities": [[0.1, 0.9]], "label": ["mri"]}}),
        (200, {"outputs": {"translated": [[[5.0]]], "translated_unit": [[[0.0]]]}}),
    ]
    client = RestClient(url_of(server) + "/")
    images = np.zeros((2, 1, 1))
    translated = client.translate("stargan", images, target_domain="ct")
    masks = client.segment("segmentation", images, ["ct", "mri"])
    labels = client.classify("classifier", images[:1])
    client.translate("cyclegan_mri2ct", images[:1])
    bodies = [(path, body["signature_name"], sorted(body["inputs"]))
              for _, path, _, body in server.requests]
    assert bodies == [
        ("/v1/models/stargan:predict", "translate", ["image", "target_domain"]),
        ("/v1/models/segmentation:predict", "segment", ["image", "modality"]),
        ("/v1/models/classifier:predict", "classify", ["image"]),
        ("/v1/models/cyclegan_mri2ct:predict", "translate", ["image"]),
    ]
    assert server.requests[0][3]["inputs"]["target_domain"] == ["ct", "ct"]
    # (B, H, W) slices travel as the signatures' (B, H, W, 1) and come back as (B, H, W)
    assert all(np.ndim(body["inputs"]["image"]) == 4 for _, _, _, body in server.requests)
    assert translated["translated"].shape == (2, 1, 1)
    assert translated["translated"].tolist() == [[[1.0]], [[2.0]]]
    assert server.requests[1][3]["inputs"]["modality"] == ["ct", "mri"]
    assert masks["mask"].dtype == np.uint8 and masks["mask"].tolist() == [[[1]], [[0]]]
    assert labels["label"].tolist() == ["mri"]
    with pytest.raises(ValueError, match="2 modality names for 3 images"):
        client.segment("segmentation", np.zeros((3, 1, 1)), ["ct", "mri"])


def test_status_and_metadata_are_get_requests(server):
    server.answers += [(200, {"model_version_status": [{"version": "2", "state": "AVAILABLE"}]}),
                       (200, {"metadata": {"signature_def": {}}})]
    client = RestClient(url_of(server))
    assert client.status("stargan")["model_version_status"][0]["state"] == "AVAILABLE"
    assert "metadata" in client.metadata("stargan", version=2)
    assert [r[:2] for r in server.requests] == [("GET", "/v1/models/stargan"),
                                                ("GET", "/v1/models/stargan/versions/2/metadata")]


def test_a_single_unnamed_output_is_returned_as_output(server):
    server.answers.append((200, {"outputs": [[0.25, 0.75]]}))
    out = RestClient(url_of(server)).predict("m", {"x": [1.0]})
    assert list(out) == ["output"] and out["output"].tolist() == [[0.25, 0.75]]


@pytest.mark.parametrize("status, body, expected", [
    (404, {"error": "Servable not found for request: Latest(nomodel)"},
     r"HTTP 404: Servable not found for request: Latest\(nomodel\)"),
    (400, {"error": "Missing 'inputs' or 'instances' key"}, r"HTTP 400: Missing 'inputs'"),
    (500, "<html>Internal Server Error</html>", r"HTTP 500: <html>Internal Server Error"),
])
def test_http_errors_name_the_url_and_the_servers_message(server, status, body, expected):
    server.answers.append((status, body))
    url = f"{url_of(server)}/v1/models/nomodel:predict"
    with pytest.raises(ServingError, match=expected) as info:
        RestClient(url_of(server)).predict("nomodel", {"image": [[[0.0]]]})
    assert str(info.value).startswith(f"{url}: ")
    assert info.value.url == url and info.value.status == status


def test_an_answer_that_is_not_tf_serving_is_an_error(server):
    server.answers += [(200, "not json"), (200, {"predictions": [1]})]
    client = RestClient(url_of(server))
    with pytest.raises(ServingError, match="the answer is not JSON"):
        client.predict("m", {"x": [1.0]})
    with pytest.raises(ServingError, match="has no 'outputs'"):
        client.predict("m", {"x": [1.0]})


def test_connection_refused_names_the_url():
    with socket.socket() as s:            # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1/models/stargan:predict"
    with pytest.raises(ServingError, match="cannot connect") as info:
        RestClient(f"http://127.0.0.1:{port}", timeout=5).predict("stargan", {"x": [1.0]})
    assert str(info.value).startswith(url + ": ")
    assert info.value.status is None


def test_a_server_that_does_not_answer_times_out():
    with socket.socket() as listener:     # accepts the connection, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(ServingError, match=r"no answer within 0\.3 s"):
            RestClient(url, timeout=0.3).predict("stargan", {"x": [1.0]})


def test_bad_arguments_are_refused_before_any_request():
    client = RestClient("http://127.0.0.1:9")
    with pytest.raises(ValueError, match="inputs is empty"):
        client.predict("m", {})
    with pytest.raises(ValueError, match="model name"):
        client.predict("a/b", {"x": [1.0]})
    with pytest.raises(ValueError, match="version"):
        client.predict("m", {"x": [1.0]}, version=-1)
    with pytest.raises(ValueError, match="dtype complex"):
        client.predict("m", {"x": np.array([1j])})
    with pytest.raises(ValueError, match="http://"):
        RestClient("localhost:8501")


@pytest.mark.skipif(importlib.util.find_spec("tensorflow_serving") is not None,
                    reason="tensorflow-serving-api is installed")
def test_grpc_client_without_the_extra_says_how_to_install_it():
    with pytest.raises(ImportError, match=r"pip install 'ctmri-tf\[serving\]'"):
        serving.GrpcClient("localhost:8500")
