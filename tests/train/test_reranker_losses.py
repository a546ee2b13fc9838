from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", ["lce", "listnet", "lambda"])
def test_listwise_losses_take_the_whole_batch_in_one_forward_pass_or_in_chunks(tiny_cross_encoder_path, monkeypatch,
                                                                               name):
    """whole_batch (a GPU): 2 queries x 3 passages go through the model at once; otherwise in chunks of as many pairs
    as there are queries. The loss is the same."""
    import torch
    from sentence_transformers import CrossEncoder

    from ragtune.train.reranker_losses import listwise_loss

    model = CrossEncoder(tiny_cross_encoder_path, device="cpu")
    calls: list[int] = []
    forward = CrossEncoder.forward

    def counting(self, features, *args, **kwargs):
        calls.append(int(features["input_ids"].shape[0]))
        return forward(self, features, *args, **kwargs)

    monkeypatch.setattr(CrossEncoder, "forward", counting)
    batch = [["volcano magma", "tea water"], [["magma rises", "green tea", "sun"], ["boiling water tea", "magma", "sun"]]]
    labels = [torch.tensor([1.0, 0.0, 0.0]), torch.tensor([1.0, 0.0, 0.0])]
    with torch.no_grad():
        whole = float(listwise_loss(name, model, whole_batch=True)(batch, labels))
        assert calls == [6]
        calls.clear()
        chunked = float(listwise_loss(name, model, whole_batch=False)(batch, labels))
        assert calls == [2, 2, 2]
    assert whole == pytest.approx(chunked, rel=1e-4, abs=1e-6)


def test_lce_is_cross_entropy_against_the_positives(tiny_cross_encoder_path):
    """LCE's target is all on the positives (ListNet's softmax of binary labels is nearly uniform): its value is
    -log of the positives' softmax share, averaged over the queries."""
    import torch
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder.losses import ListNetLoss

    from ragtune.train.reranker_losses import lce_loss

    model = CrossEncoder(tiny_cross_encoder_path, device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.model.parameters():
            param.add_(torch.randn_like(param) * 0.5)
    queries = ["volcano magma", "tea water"]
    docs = [["magma rises", "green tea", "plants glucose"], ["boiling water tea", "magma", "glucose", "sun"]]
    labels = [torch.tensor([1.0, 0.0, 0.0]), torch.tensor([1.0, 1.0, 0.0, 0.0])]
    with torch.no_grad():
        lce = float(lce_loss(model)([queries, docs], labels))
        listnet = float(ListNetLoss(model)([queries, docs], labels))
        expected = 0.0
        for query, cands, lbl in zip(queries, docs, labels, strict=True):
            logits = model.model(**model.tokenizer([query] * len(cands), cands, padding=True,
                                                   return_tensors="pt")).logits.view(-1)
            log_p = torch.log_softmax(logits, 0)
            expected += float(-(log_p * (lbl / lbl.sum())).sum()) / len(queries)
    assert lce == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert abs(lce - listnet) > 1e-3
