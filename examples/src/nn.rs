//! A small multi-layer perceptron over `ndarray` (tanh hidden layers, a linear output) and the
//! Adam optimiser: forward passes for one observation (ES, without allocating) or a batch, and
//! the backward pass PPO needs. Parameters live in one flat `Vec<f32>` (per layer: the weights
//! row-major as `out x in`, then the biases), so ES can perturb them with a slice of the noise
//! table and an optimiser can step them as one vector.

use ndarray::linalg::general_mat_vec_mul;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, Axis};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

/// The shape of a network: layer widths from input to output.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct Mlp {
    sizes: Vec<usize>,
}

/// One layer's place in the flat parameter vector.
#[derive(Debug, Clone, Copy)]
struct Layer {
    offset: usize,
    inputs: usize,
    outputs: usize,
}

impl Layer {
    fn weights<'a>(&self, params: &'a [f32]) -> ArrayView2<'a, f32> {
        let end = self.offset + self.inputs * self.outputs;
        ArrayView2::from_shape((self.outputs, self.inputs), &params[self.offset..end])
            .expect("the layer's weights fit its shape")
    }

    fn biases<'a>(&self, params: &'a [f32]) -> &'a [f32] {
        let start = self.offset + self.inputs * self.outputs;
        &params[start..start + self.outputs]
    }

    fn len(&self) -> usize {
        self.inputs * self.outputs + self.outputs
    }
}

/// Reusable buffers for [`Mlp::forward`].
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    current: Vec<f32>,
    next: Vec<f32>,
}

/// The activations of a batch forward pass, kept for [`Mlp::backward`]: the input, then each
/// layer's output (the last one is the network's output).
#[derive(Debug, Clone)]
pub struct Activations(Vec<Array2<f32>>);

impl Activations {
    /// The network's output, `batch x outputs`.
    pub fn output(&self) -> &Array2<f32> {
        self.0.last().expect("at least the input")
    }
}

impl Mlp {
    /// A network from `inputs` through `hidden` tanh layers to `outputs` linear units.
    pub fn new(inputs: usize, hidden: &[usize], outputs: usize) -> Self {
        let mut sizes = vec![inputs];
        sizes.extend_from_slice(hidden);
        sizes.push(outputs);
        Mlp { sizes }
    }

    /// Layer widths from input to output.
    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    /// Number of inputs.
    pub fn inputs(&self) -> usize {
        self.sizes[0]
    }

    /// Number of outputs.
    pub fn outputs(&self) -> usize {
        self.sizes[self.sizes.len() - 1]
    }

    fn layers(&self) -> impl Iterator<Item = Layer> + '_ {
        let mut offset = 0;
        self.sizes.windows(2).map(move |w| {
            let layer = Layer {
                offset,
                inputs: w[0],
                outputs: w[1],
            };
            offset += layer.len();
            layer
        })
    }

    /// Length of the flat parameter vector.
    pub fn num_params(&self) -> usize {
        self.layers().map(|l| l.len()).sum()
    }

    /// Initial parameters: each unit's incoming weights drawn normal and scaled to norm 1
    /// (the last layer's to `output_norm`), biases zero.
    pub fn init(&self, rng: &mut impl Rng, output_norm: f32) -> Vec<f32> {
        let mut params = vec![0.0f32; self.num_params()];
        let last = self.sizes.len() - 2;
        for (index, layer) in self.layers().enumerate() {
            let norm = if index == last { output_norm } else { 1.0 };
            for unit in 0..layer.outputs {
                let start = layer.offset + unit * layer.inputs;
                let row = &mut params[start..start + layer.inputs];
                for w in row.iter_mut() {
                    *w = StandardNormal.sample(rng);
                }
                let length = row.iter().map(|w| w * w).sum::<f32>().sqrt().max(1e-12);
                row.iter_mut().for_each(|w| *w *= norm / length);
            }
        }
        params
    }

    /// The output for one input, computed in `scratch` without allocating once warm.
    pub fn forward<'s>(
        &self,
        params: &[f32],
        input: &[f32],
        scratch: &'s mut Scratch,
    ) -> &'s [f32] {
        let Scratch { current, next } = scratch;
        current.clear();
        current.extend_from_slice(input);
        let last = self.sizes.len() - 2;
        for (index, layer) in self.layers().enumerate() {
            next.clear();
            next.extend_from_slice(layer.biases(params));
            let mut out = ArrayViewMut1::from(&mut next[..]);
            let x = ArrayView1::from(&current[..]);
            general_mat_vec_mul(1.0, &layer.weights(params), &x, 1.0, &mut out);
            if index < last {
                next.iter_mut().for_each(|v| *v = v.tanh());
            }
            std::mem::swap(current, next);
        }
        current
    }

    /// The outputs for a batch of inputs (`batch x inputs`), with what [`backward`](Self::backward)
    /// needs.
    pub fn forward_batch(&self, params: &[f32], input: ArrayView2<'_, f32>) -> Activations {
        let mut acts = vec![input.to_owned()];
        let last = self.sizes.len() - 2;
        for (index, layer) in self.layers().enumerate() {
            let prev = acts.last().expect("the input");
            let mut z = prev.dot(&layer.weights(params).t());
            z += &ArrayView1::from(layer.biases(params));
            if index < last {
                z.mapv_inplace(f32::tanh);
            }
            acts.push(z);
        }
        Activations(acts)
    }

    /// The gradient of a loss with respect to the parameters, given the loss's gradient with
    /// respect to the outputs of the batch in `acts` (`batch x outputs`).
    pub fn backward(&self, params: &[f32], acts: &Activations, d_output: Array2<f32>) -> Vec<f32> {
        let mut grad = vec![0.0f32; self.num_params()];
        let layers: Vec<Layer> = self.layers().collect();
        let mut delta = d_output;
        for (index, layer) in layers.iter().enumerate().rev() {
            let input = &acts.0[index];
            let d_weights = delta.t().dot(input);
            let d_biases: Array1<f32> = delta.sum_axis(Axis(0));
            let w_end = layer.offset + layer.inputs * layer.outputs;
            grad[layer.offset..w_end]
                .copy_from_slice(d_weights.as_slice().expect("a fresh standard-layout array"));
            grad[w_end..w_end + layer.outputs]
                .copy_from_slice(d_biases.as_slice().expect("a fresh array"));
            if index > 0 {
                let mut back = delta.dot(&layer.weights(params));
                back.zip_mut_with(input, |d, a| *d *= 1.0 - a * a);
                delta = back;
            }
        }
        grad
    }
}

/// Adam (Kingma and Ba 2015), minimising. Archivable, so a checkpoint can carry its moments.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Adam {
    lr: f32,
    beta1: f32,
    beta2: f32,
    epsilon: f32,
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl Adam {
    /// An optimiser for `n` parameters with step size `lr` and the usual betas (0.9, 0.999).
    pub fn new(n: usize, lr: f32) -> Self {
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    /// Sets the step size (for schedules).
    pub fn set_lr(&mut self, lr: f32) {
        self.lr = lr;
    }

    /// One step against `grad`; returns the size of the update relative to the parameters.
    pub fn step(&mut self, params: &mut [f32], grad: &[f32]) -> f32 {
        assert_eq!(params.len(), grad.len(), "one gradient entry per parameter");
        self.t += 1;
        let a = self.lr * (1.0 - self.beta2.powi(self.t)).sqrt() / (1.0 - self.beta1.powi(self.t));
        let (mut step_sq, mut param_sq) = (0.0f32, 0.0f32);
        for (((p, g), m), v) in params
            .iter_mut()
            .zip(grad)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            *m = self.beta1 * *m + (1.0 - self.beta1) * g;
            *v = self.beta2 * *v + (1.0 - self.beta2) * g * g;
            let step = -a * *m / (v.sqrt() + self.epsilon);
            *p += step;
            step_sq += step * step;
            param_sq += *p * *p;
        }
        (step_sq / param_sq.max(1e-12)).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn net() -> (Mlp, Vec<f32>, Array2<f32>) {
        let mlp = Mlp::new(3, &[5, 4], 2);
        let mut rng = SmallRng::seed_from_u64(7);
        let params = mlp.init(&mut rng, 1.0);
        let input = Array2::from_shape_fn((6, 3), |(i, j)| ((i * 3 + j) as f32 * 0.37).sin());
        (mlp, params, input)
    }

    /// A scalar loss of the outputs: sum of out * weight, with fixed weights per entry.
    fn loss(mlp: &Mlp, params: &[f32], input: &Array2<f32>) -> f64 {
        let out = mlp.forward_batch(params, input.view());
        out.output()
            .indexed_iter()
            .map(|((i, j), v)| f64::from(*v) * ((i + 2 * j) as f64 * 0.3).cos())
            .sum()
    }

    #[test]
    fn backward_matches_finite_differences() {
        let (mlp, params, input) = net();
        let acts = mlp.forward_batch(&params, input.view());
        let d_out = Array2::from_shape_fn(acts.output().dim(), |(i, j)| {
            ((i + 2 * j) as f64 * 0.3).cos() as f32
        });
        let grad = mlp.backward(&params, &acts, d_out);
        assert_eq!(grad.len(), mlp.num_params());
        let h = 1e-3f32;
        for k in 0..params.len() {
            let mut plus = params.clone();
            plus[k] += h;
            let mut minus = params.clone();
            minus[k] -= h;
            let numeric =
                (loss(&mlp, &plus, &input) - loss(&mlp, &minus, &input)) / (2.0 * f64::from(h));
            let analytic = f64::from(grad[k]);
            assert!(
                (numeric - analytic).abs() <= 2e-3 * (1.0 + numeric.abs()),
                "parameter {k}: finite differences {numeric}, backward {analytic}"
            );
        }
    }

    #[test]
    fn single_forward_matches_the_batch() {
        let (mlp, params, input) = net();
        let batch = mlp.forward_batch(&params, input.view());
        let mut scratch = Scratch::default();
        for (row, expected) in input.rows().into_iter().zip(batch.output().rows()) {
            let row: Vec<f32> = row.to_vec();
            let out = mlp.forward(&params, &row, &mut scratch);
            for (a, b) in out.iter().zip(expected) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn adam_minimises_a_quadratic() {
        let mut x = vec![3.0f32, -2.0, 0.5];
        let mut adam = Adam::new(3, 0.1);
        for _ in 0..500 {
            let grad: Vec<f32> = x.iter().map(|v| 2.0 * v).collect();
            adam.step(&mut x, &grad);
        }
        assert!(x.iter().all(|v| v.abs() < 1e-2), "{x:?}");
    }
}
