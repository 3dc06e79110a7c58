"""Model families built from ctxppl primitives (mixed effects, ...)."""

# Contextualized model families (regression, classification, networks) and metamodels.
# Mixed-effect / multi-level models (lme4 formulas): ctx.mixed, ctx.models.mixed.program.
from ctxppl.models import mixed as mixed
from ctxppl.models._common import elastic_net as elastic_net
from ctxppl.models._metamodels import ArchetypeHead as ArchetypeHead
from ctxppl.models._metamodels import Composed as Composed
from ctxppl.models._metamodels import LinearHead as LinearHead
from ctxppl.models._metamodels import Metamodel as Metamodel
from ctxppl.models._networks import BayesianNetwork as BayesianNetwork
from ctxppl.models._networks import CorrelationNetwork as CorrelationNetwork
from ctxppl.models._networks import MarkovNetwork as MarkovNetwork
from ctxppl.models._networks import correlation_from_slopes as correlation_from_slopes
from ctxppl.models._networks import dag_poly as dag_poly
from ctxppl.models._networks import dag_pred as dag_pred
from ctxppl.models._networks import is_dag as is_dag
from ctxppl.models._networks import notears as notears
from ctxppl.models._networks import project_to_dag as project_to_dag
from ctxppl.models._regression import Classification as Classification
from ctxppl.models._regression import Regression as Regression
from ctxppl.models._regression import UnivariateRegression as UnivariateRegression

__all__ = ["mixed", "Regression", "Classification", "UnivariateRegression", "CorrelationNetwork",
           "MarkovNetwork", "BayesianNetwork", "Metamodel", "Composed", "LinearHead",
           "ArchetypeHead", "elastic_net", "correlation_from_slopes", "notears", "dag_poly",
           "dag_pred", "is_dag", "project_to_dag"]
