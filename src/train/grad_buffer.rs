//! The gradients of a data-parallel step in one flat buffer, allocated once: each parameter's
//! gradient is a view of it, so autograd accumulates into it in place (a gradient that exists is
//! added to, as `zero_grad(set_to_none=False)` leaves it) and the ranks' all-reduce runs on the
//! buffer as it is, with no concatenation before it and no copy back after it. The buffer's tail
//! carries the step's values (the loss terms and the stop flag) in the same all-reduce.
//!
//! Which parameters have a gradient is what backward left: a parameter no loss reaches has none
//! and keeps none (the optimiser skips it). The buffer is made anew, the gradients copied in, when
//! that set changes, which is on a run's first step.
use crate::shim;
use tch::{Kind, Tensor};

/// The flat buffer and where each variable's gradient is in it.
pub struct GradBuffer {
    /// [N + K] f32 on the device: the gradients flattened in the variables' order, then K values.
    flat: Tensor,
    /// The address of each variable's gradient (a view of `flat`); none where it has none.
    views: Vec<Option<usize>>,
    /// N.
    grads: i64,
}

/// Where `var`'s gradient is, if it has one.
fn grad_address(var: &Tensor) -> Option<usize> {
    let g = var.grad();
    g.defined().then(|| g.data_ptr() as usize)
}

impl GradBuffer {
    /// The buffer of the gradients `vars` (f32 parameters on one device) hold now, and `k`
    /// values: `current` when it is that buffer, else a new one.
    pub fn for_step(current: Option<GradBuffer>, vars: &[Tensor], k: i64) -> GradBuffer {
        match current {
            Some(b) if b.holds(vars, k) => b,
            _ => GradBuffer::adopt(vars, k),
        }
    }

    /// Whether every gradient of `vars` is its view in this buffer (and only those have one),
    /// with room for `k` values.
    fn holds(&self, vars: &[Tensor], k: i64) -> bool {
        self.flat.size()[0] == self.grads + k
            && self.views.len() == vars.len()
            && vars
                .iter()
                .zip(&self.views)
                .all(|(v, want)| grad_address(v) == *want)
    }

    /// A buffer with the gradients `vars` hold copied in, each variable's gradient then its view.
    fn adopt(vars: &[Tensor], k: i64) -> GradBuffer {
        let grads: Vec<Option<Tensor>> = vars
            .iter()
            .map(|v| Some(v.grad()).filter(Tensor::defined))
            .collect();
        let n: i64 = grads.iter().flatten().map(|g| g.numel() as i64).sum();
        let device = vars.first().map_or(tch::Device::Cpu, Tensor::device);
        let flat = Tensor::zeros([n + k], (Kind::Float, device));
        let mut offset = 0;
        let mut views = Vec::with_capacity(vars.len());
        for (var, grad) in vars.iter().zip(&grads) {
            let Some(grad) = grad else {
                views.push(None);
                continue;
            };
            let numel = grad.numel() as i64;
            let mut view = flat.narrow(0, offset, numel).view(grad.size().as_slice());
            view.copy_(grad);
            let mut var = var.shallow_clone();
            // SAFETY: two live tensors; the shim keeps a reference to `view` as `var`'s gradient.
            shim::call(
                |err| unsafe {
                    shim::ccma_set_grad(var.as_mut_ptr().cast(), view.as_mut_ptr().cast(), err)
                },
                |ok| *ok == 0,
            )
            .expect("a view of the buffer has its f32 parameter's shape, type and device");
            views.push(Some(view.data_ptr() as usize));
            offset += numel;
        }
        GradBuffer {
            flat,
            views,
            grads: n,
        }
    }

    /// The whole buffer, [N + K] f32.
    pub fn flat_mut(&mut self) -> &mut Tensor {
        &mut self.flat
    }

    /// The gradients, [N] f32 (a view).
    pub fn gradients(&self) -> Tensor {
        self.flat.narrow(0, 0, self.grads)
    }

    /// The values, [K] f32 (a view).
    pub fn values(&self) -> Tensor {
        let k = self.flat.size()[0] - self.grads;
        self.flat.narrow(0, self.grads, k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three variables, the middle one without a gradient.
    fn vars() -> Vec<Tensor> {
        let opts = (Kind::Float, tch::Device::Cpu);
        let vs: Vec<Tensor> = (0..3)
            .map(|i| Tensor::ones([2, i + 1], opts).set_requires_grad(true))
            .collect();
        (&vs[0] * 2.0).sum(Kind::Float).backward();
        (&vs[2] * 3.0).sum(Kind::Float).backward();
        vs
    }

    #[test]
    fn gradients_become_views_that_backward_accumulates_into() {
        let vs = vars();
        let buf = GradBuffer::for_step(None, &vs, 2);
        assert_eq!(buf.flat.size(), [2 + 6 + 2]);
        assert!(
            !vs[1].grad().defined(),
            "a variable without a gradient keeps none"
        );
        let want: Vec<f32> = [vec![2.0; 2], vec![3.0; 6], vec![0.0; 2]].concat();
        assert_eq!(Vec::<f32>::try_from(&buf.flat).unwrap(), want);
        // Autograd adds into the views: the buffer sees it, and it is kept for the next step.
        (&vs[2] * 1.0).sum(Kind::Float).backward();
        let buf = GradBuffer::for_step(Some(buf), &vs, 2);
        assert_eq!(buf.gradients().double_value(&[7]), 4.0);
        assert!(vs[2]
            .grad()
            .equal(&buf.gradients().narrow(0, 2, 6).view([2, 3])));
        let at = buf.flat.data_ptr();
        // The middle variable gets a gradient: a new buffer holds all three.
        (&vs[1] * 5.0).sum(Kind::Float).backward();
        let buf = GradBuffer::for_step(Some(buf), &vs, 2);
        assert_ne!(buf.flat.data_ptr(), at);
        let got = Vec::<f32>::try_from(&buf.gradients()).unwrap();
        assert_eq!(got, [vec![2.0; 2], vec![5.0; 4], vec![4.0; 6]].concat());
        assert_eq!(buf.values().size(), [2]);
    }
}
