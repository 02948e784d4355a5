"""The integer model is a graph: file format version 2 writes it, version 1 files still load,
and a file whose operators are not a DAG from ``input`` to ``pred`` is refused."""
import json
import shutil
from pathlib import Path

import pytest

from model.intmodel import IntModel, ModelFileError, graph_spec
from model.synthetic import random_inputs, random_intmodel

SMALL = dict(features=3, window=4, d_model=4, heads=2, layers=2, ffn=8, norm="layernorm",
             activation="gelu")
V1 = Path(__file__).parent / "data" / "saved_run_v1"


def doc_of(directory):
    return json.loads((Path(directory) / "intmodel.json").read_text())


def rewrite(directory, doc):
    (Path(directory) / "intmodel.json").write_text(json.dumps(doc))


def test_version_2_round_trip_holds_the_graph(tmp_path):
    model = random_intmodel(SMALL, bits=6, seed=1)
    model.save(tmp_path)
    doc = doc_of(tmp_path)
    assert doc["version"] == 2
    assert [(o["kind"], o["inputs"], o["output"], o["shape"], o["dims"]) for o in doc["ops"]] == [
        (s.kind, list(s.inputs), s.output, list(s.shape), s.dims) for s in graph_spec(SMALL)]
    again = IntModel.load(tmp_path)
    assert [o.spec for o in again.ops] == [o.spec for o in model.ops]
    w = random_inputs(model, 5, seed=2)
    assert again.forward(w)["pred"].tolist() == model.forward(w)["pred"].tolist()


def test_a_version_1_run_saved_again_is_version_2_and_the_same(tmp_path):
    old = IntModel.load(V1)
    assert doc_of(V1)["version"] == 1
    old.save(tmp_path)
    new = IntModel.load(tmp_path)
    assert doc_of(tmp_path)["version"] == 2
    assert [o.spec for o in new.ops] == [o.spec for o in old.ops]
    w = random_inputs(old, 8, seed=3)
    assert new.forward(w)["pred"].tolist() == old.forward(w)["pred"].tolist()


def test_the_graph_comes_from_the_file_not_the_configuration(tmp_path):
    """Version 2 reads the operators' connections from the file: a model whose second residual
    adds the layer input instead of norm1 computes what the file says."""
    model = random_intmodel(dict(SMALL, layers=1), bits=6, seed=4)
    model.save(tmp_path)
    doc = doc_of(tmp_path)
    res2 = next(o for o in doc["ops"] if o["output"] == "l0.res2")
    res2["inputs"] = ["embed", "l0.ffn_out"]
    rewrite(tmp_path, doc)
    rewired = IntModel.load(tmp_path)
    assert rewired.op("l0.res2").spec.inputs == ("embed", "l0.ffn_out")
    w = random_inputs(model, 4, seed=5)
    v = rewired.forward(w)
    assert rewired.consumers("embed") == [rewired.op(n) for n in ("l0.q", "l0.k", "l0.v",
                                                                  "l0.res1", "l0.res2")]
    assert not (v["l0.res2"] == model.forward(w)["l0.res2"]).all()


@pytest.mark.parametrize("edit, message", [
    (lambda ops: ops[0].update(inputs=["l0.q"]), "not written before it"),
    (lambda ops: ops.insert(1, ops[0]), "written twice"),
    (lambda ops: ops[0].update(shape=[4, 5]), "declares shape"),
    (lambda ops: ops.pop(), "no operator writes the output 'pred'"),
    (lambda ops: next(o for o in ops if o["output"] == "l1.res2").update(
        inputs=["l1.norm1", "l1.norm1"]), r"\['l1.ffn_pre', 'l1.ffn_hidden', 'l1.ffn_out'\] do not"),
])
def test_a_graph_that_is_not_a_dag_to_pred_is_refused(tmp_path, edit, message):
    random_intmodel(SMALL, bits=6, seed=1).save(tmp_path)
    doc = doc_of(tmp_path)
    edit(doc["ops"])
    rewrite(tmp_path, doc)
    with pytest.raises(ModelFileError, match=message):
        IntModel.load(tmp_path)


def test_a_version_1_file_must_be_its_configurations_graph(tmp_path):
    shutil.copytree(V1, tmp_path / "run")
    doc = doc_of(tmp_path / "run")
    doc["ops"][0]["output"] = "projection"
    rewrite(tmp_path / "run", doc)
    with pytest.raises(ModelFileError, match="is not 'proj'"):
        IntModel.load(tmp_path / "run")


def test_unknown_version_is_refused(tmp_path):
    random_intmodel(SMALL, bits=6, seed=1).save(tmp_path)
    doc = doc_of(tmp_path)
    doc["version"] = 3
    rewrite(tmp_path, doc)
    with pytest.raises(ModelFileError, match="version 1 or 2"):
        IntModel.load(tmp_path)
