import torch
from model import compose as cq
from model.data import load_weather
from model.train import training_target
from sim.hardware import SimulatedAccelerator

class PreNormTwoFFN(torch.nn.Module):   # norm first; attention, then two GELU feed-forwards
    def __init__(self, features=7, window=12, d=8):
        super().__init__()
        self.input, self.embed = cq.Input(features, window), cq.Linear(features, d)
        self.pe, self.attn = cq.PositionalEncoding(window, d), cq.MultiHeadAttention(d, heads=2)
        self.norms = torch.nn.ModuleList(cq.LayerNorm(d) for _ in range(3))
        self.ffns = torch.nn.ModuleList(cq.FeedForward(d, 2 * d, "gelu") for _ in range(2))
        self.adds = torch.nn.ModuleList(cq.Add() for _ in range(3))
        self.pool, self.head = cq.MeanPool(), cq.Linear(d, 1)

    def forward(self, x):
        h = self.pe(self.embed(self.input(x)))
        for k, block in enumerate([self.attn, *self.ffns]):   # x + block(norm(x)), three times
            h = self.adds[k](h, block(self.norms[k](h)))
        return self.head(self.pool(h))

torch.manual_seed(0)
data = load_weather(window=12)                                  # the default data, normalised
change = training_target(data, data.train, "change")            # next value minus the last
model = cq.fit(PreNormTwoFFN(), data.train.X[:1024], change[:1024], epochs=2)
intmodel = cq.to_intmodel(model, data.train.X[:256], data=data, forecast="change")
windows = data.denormalise_features(data.test.X[:3])            # raw features
hardware = SimulatedAccelerator(intmodel, simulator="amaranth")  # the generated Accelerator
assert (hardware.predict(windows) == intmodel.predict(windows)).all()
