"""Reading cohort files and aligning them by participant ID.

- Images: :func:`check_images` (the one gate for image input, returning an :class:`ImageSource`),
  :class:`NiftiImageSet`, :func:`load_image`, :func:`check_image_headers`,
  :func:`list_images`, :func:`read_image_paths`, :func:`list_bids_images`, :func:`images_from_template`
  and :func:`find_images`, which accepts any of these layouts (lazy: headers on construction, voxels
  on access).
- Genotypes: :func:`read_genotypes` (PLINK 1 .bed via bed-reader, PLINK 2 .pgen via pgenlib, BGEN
  v1.2 + .sample via bgen, VCF/BCF via cyvcf2, or CSV; selection by rsID or gene before decoding),
  :func:`write_plink`, :func:`write_pgen`, :func:`write_bgen`, :func:`write_genotypes_csv`,
  :func:`check_genotypes`, :func:`read_info_table` (UK Biobank mfi tables).
- Phenotypes: :func:`read_phenotypes` (column mapping, categorical codings such as :data:`SEX_CODING`).
- Cohort: :func:`align_cohort` (inner join reporting what it dropped),
  :func:`working_memory_groups`, :func:`load_cohort`.
- Polygenic scores: :func:`read_scoring_file` (PGS Catalog format 2.0, with pgscatalog-core),
  :func:`read_variant_table` (a genotype file's variants and alleles, nothing decoded),
  :func:`write_scoring_file`; matching and scoring in :mod:`sklearn_cgni.genetics`.
- Atlas and template: :func:`load_atlas` (AAL2 by default), :func:`load_gray_matter_template`.
"""

from ._atlas import aal_atlas_files, load_atlas, load_gray_matter_template
from ._cohort import align_cohort, find_images, load_cohort, read_image_paths, working_memory_groups
from ._genotype_blocks import GenotypeBlocks
from ._genotypes import read_info_table, write_bgen, write_pgen
from ._pgs import read_scoring_file, read_variant_table, write_scoring_file
from ._images import check_image_headers, images_from_template, list_bids_images, list_images, load_image
from ._source import ImageSource, NiftiImageSet, check_images
from ._tables import (
    PHENOTYPE_NA_VALUES,
    SEX_CODING,
    check_genotypes,
    infer_column_type,
    read_genotypes,
    read_phenotypes,
    write_genotypes_csv,
    write_plink,
)

__all__ = [
    "GenotypeBlocks",
    "ImageSource",
    "NiftiImageSet",
    "PHENOTYPE_NA_VALUES",
    "SEX_CODING",
    "aal_atlas_files",
    "align_cohort",
    "check_genotypes",
    "check_image_headers",
    "check_images",
    "find_images",
    "images_from_template",
    "infer_column_type",
    "list_bids_images",
    "list_images",
    "load_atlas",
    "load_cohort",
    "load_gray_matter_template",
    "load_image",
    "read_genotypes",
    "read_image_paths",
    "read_info_table",
    "read_phenotypes",
    "read_scoring_file",
    "read_variant_table",
    "working_memory_groups",
    "write_bgen",
    "write_genotypes_csv",
    "write_pgen",
    "write_plink",
    "write_scoring_file",
]
