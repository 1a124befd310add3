
use crate::{cli::QueuesDeadLettersArgs, context::Context, error::Result, exit::Exit, management::Api};
pub async fn run(_ctx: &Context, _api: &Api, _args: QueuesDeadLettersArgs) -> Result<Exit> { todo!() }
