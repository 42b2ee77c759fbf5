//! A GPU tensor: a view (offset + shape) into a storage buffer of `f32`.

use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct Tensor {
    pub(crate) buffer: Arc<wgpu::Buffer>,
    /// Offset of the first element, in elements (its byte offset is aligned for binding).
    pub(crate) offset: usize,
    pub(crate) shape: Vec<usize>,
}

impl Tensor {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A view of `len(shape)` elements starting `offset` elements into this tensor. The byte
    /// offset must respect the adapter's `min_storage_buffer_offset_alignment` (256 bytes
    /// always does).
    pub fn view(&self, offset: usize, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        assert!(
            offset + n <= self.len(),
            "view [{offset}, {}) out of {} elements",
            offset + n,
            self.len()
        );
        Tensor {
            buffer: self.buffer.clone(),
            offset: self.offset + offset,
            shape: shape.to_vec(),
        }
    }

    /// The same elements with another shape.
    pub fn reshape(&self, shape: &[usize]) -> Tensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            self.len(),
            "reshape {:?} -> {shape:?}",
            self.shape
        );
        Tensor {
            buffer: self.buffer.clone(),
            offset: self.offset,
            shape: shape.to_vec(),
        }
    }

    pub(crate) fn binding(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: (self.offset * 4) as u64,
            size: wgpu::BufferSize::new((self.len().max(1) * 4) as u64),
        })
    }
}
